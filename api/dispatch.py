"""Handing a job to the workers, without importing them.

Distributed mode: a Celery app that knows only the broker sends the task *by name* (`uds.run_job`, queue
UDS_QUEUE), so this process needs neither worker/ nor torch. The workers' recovery sweep re-sends through the same
class, with the same bounded retries. Embedded mode: the job row (status `queued`) is the queue; `LocalDispatcher`
only sets its wake-up event, which `uds serve` hands to the in-process worker thread, so a new job does not wait
for the worker's next poll.
"""

from __future__ import annotations

import threading
from typing import Protocol

from api.settings import Settings

TASK_NAME = "uds.run_job"
# Short work on a finished job (merged export, try-it generation): same queue, so any worker with the model can run it.
SHORT_TASK_NAME = "uds.run_task"


def celery_config(settings: Settings) -> dict:
    """Configuration shared by the API's sending app and the worker's app (worker/celery_app.py)."""
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}, SHORT_TASK_NAME: {"queue": settings.queue}},
        # Redis redelivers an unacknowledged task after this long; a job may run for days, and a dead worker's
        # job is recovered sooner by the heartbeat sweep (worker/recovery.py), so this is only the last resort.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_seconds},
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
    }


def job_queue(queue: str, devices: int) -> str:
    """The queue of a job on `devices` devices: one-device jobs on `queue` itself, an N-device job on
    "<queue>.devices-N", which only workers offering N or more devices consume (`worker_queues`). So a worker that
    can never run a job never receives it, and one that can takes it when it is idle."""
    return queue if devices <= 1 else f"{queue}.devices-{devices}"


def worker_queues(queues: str, worker_devices: int) -> list[str]:
    """Every queue a worker offering `worker_devices` devices consumes, for each base queue in `queues` (a,b)."""
    bases = [name.strip() for name in queues.split(",") if name.strip()]
    return [job_queue(base, n) for base in bases for n in range(1, worker_devices + 1)]


def job_devices(config: dict | None) -> int:
    """The devices a stored job configuration asks for (1 for configurations older than the setting)."""
    return int((config or {}).get("devices", 1))


class Dispatcher(Protocol):
    mode: str

    def enqueue(self, job_id: str, devices: int = 1) -> None: ...

    def enqueue_task(self, task_id: str) -> None: ...

    def ping(self) -> None:
        """Raise if jobs cannot be handed over right now."""


class LocalDispatcher:
    mode = "embedded"

    def __init__(self):
        self.wakeup = threading.Event()  # waited on by the in-process worker (worker/embedded.py) when there is one
        self.task_wakeup = threading.Event()  # the same for short tasks (worker/job_tasks.py TaskWorker)

    def enqueue(self, job_id: str, devices: int = 1) -> None:
        self.wakeup.set()

    def enqueue_task(self, task_id: str) -> None:
        self.task_wakeup.set()

    def ping(self) -> None:
        return None


class CeleryDispatcher:
    mode = "distributed"

    def __init__(self, settings: Settings):
        from celery import Celery

        self.queue = settings.queue
        self.app = Celery("uds-api", set_as_current=False)
        self.app.conf.update(celery_config(settings))

    def enqueue(self, job_id: str, devices: int = 1) -> None:
        self._send(TASK_NAME, job_id, job_queue(self.queue, devices))

    def enqueue_task(self, task_id: str) -> None:
        self._send(SHORT_TASK_NAME, task_id, self.queue)

    def _send(self, task_name: str, object_id: str, queue: str) -> None:
        # Bounded retries: a broker that is down must turn into an error response, not a hung request.
        self.app.send_task(
            task_name,
            args=[object_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        )

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)


def make_dispatcher(settings: Settings) -> Dispatcher:
    return LocalDispatcher() if settings.embedded else CeleryDispatcher(settings)

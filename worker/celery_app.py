"""The Celery app of the GPU workers (distributed mode). `uds worker` starts it; see worker/cli.py.

Delivery is at-least-once (acks_late + reject_on_worker_lost: a task whose process died goes back to the
queue), and the task is idempotent (runner.claim), so at-least-once means exactly one training run.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from kombu import Queue

from api.db import migrate
from api.dispatch import CeleryDispatcher, celery_config, worker_queues
from api.settings import get_settings

log = logging.getLogger(__name__)

settings = get_settings()
app = Celery("uds", include=["worker.tasks"])
app.conf.update(celery_config(settings))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # a GPU worker holds one job, never a backlog others could be running
    worker_concurrency=1,  # one process per GPU; `uds worker --concurrency N` for N GPUs
    # The one-device queue and those of jobs on up to UDS_WORKER_DEVICES devices (api.dispatch.job_queue).
    task_queues=[Queue(name) for name in worker_queues(settings.queue, settings.worker_devices)],
    task_track_started=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)

_recovery = None
_webhooks = None


@signals.worker_ready.connect
def _on_ready(sender=None, **_kwargs) -> None:
    """In the main process: schema to head, then sweep for jobs whose worker died (see worker/recovery.py). The
    sweep re-sends through the API's dispatcher, by task name and with the same bounded retries."""
    global _recovery, _webhooks
    from worker.recovery import RecoveryLoop
    from worker.webhooks import WebhookSender

    migrate(settings.sqlalchemy_url)
    _recovery = RecoveryLoop(settings, CeleryDispatcher(settings).enqueue)
    _recovery.start()
    _webhooks = WebhookSender(settings)  # job events to the tenants' webhooks (worker/webhooks.py)
    _webhooks.start()


@signals.worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    # A prefork child inherits the parent's pooled connections (the parent migrated before forking); sharing a
    # socket between processes corrupts both, so the child starts with empty pools.
    from api.db import dispose_all

    dispose_all(close=False)
    # `uds worker --concurrency N` on a host with UDS_DEVICE=cuda: pool process i trains on its own GPUs, cuda:i
    # (or cuda:i*D .. i*D+D-1 with UDS_WORKER_DEVICES=D; the pool keeps indexes stable when it replaces a
    # process), instead of all processes sharing the first GPU.
    from billiard.process import current_process

    if settings.device == "cuda":
        settings.device = f"cuda:{(getattr(current_process(), 'index', 0) or 0) * settings.worker_devices}"


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs) -> None:
    if _recovery is not None:
        _recovery.stop()
    if _webhooks is not None:
        _webhooks.stop()

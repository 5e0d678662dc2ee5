"""Exports and try-it generations whose worker died: re-queued once, then failed.

A task has no heartbeat (it is short and its thread is busy in the model), so a running task is judged lost when its
owner is provably gone (same host, process gone; worker/identity.py) or it has run longer than
UDS_TASK_STALE_AFTER_SECONDS. A task lost on its first claim is re-queued (the worker may have been restarted under
it); one lost again is failed with `worker_lost` rather than crash every worker that takes it. Every change is a
conditional UPDATE on the row as it was read, so concurrent sweepers agree.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update

from api.db import session_factory
from api.models import JobTask, utcnow
from api.settings import Settings
from worker.identity import owner_lost

log = logging.getLogger(__name__)

MAX_CLAIMS = 2


def recover_tasks(settings: Settings) -> dict[str, list[str]]:
    """Sweep running tasks with a lost owner. Returns the ids by what became of them."""
    sessions = session_factory(settings.sqlalchemy_url)
    cutoff = utcnow() - dt.timedelta(seconds=settings.task_stale_after_seconds)
    outcome: dict[str, list[str]] = {"queued": [], "failed": [], "cancelled": []}
    with sessions() as session:
        running = session.execute(
            select(JobTask.id, JobTask.worker_id, JobTask.started_at, JobTask.attempts, JobTask.cancel_requested).where(
                JobTask.status == "running"
            )
        ).all()
    for task in running:
        if not owner_lost(task.worker_id, task.started_at, cutoff):
            continue
        status, values = _fate(task)
        with sessions.begin() as session:
            owner = JobTask.worker_id.is_(None) if task.worker_id is None else JobTask.worker_id == task.worker_id
            matched = session.execute(
                update(JobTask)
                .where(JobTask.id == task.id, JobTask.status == "running", owner)
                .values(status=status, worker_id=None, **values)
            ).rowcount
        if matched:
            outcome[status].append(task.id)
            log.warning("task %s of lost worker %s: %s", task.id, task.worker_id, status)
    _dispatch(settings, outcome["queued"])
    return outcome


def _fate(task) -> tuple[str, dict]:
    if task.cancel_requested:
        return "cancelled", {"finished_at": utcnow()}
    if (task.attempts or 0) < MAX_CLAIMS:
        return "queued", {"started_at": None}
    return "failed", {
        "finished_at": utcnow(),
        "error_code": "worker_lost",
        "error_message": f"The worker running this task stopped {task.attempts} times; it was not tried again.",
    }


def _dispatch(settings: Settings, task_ids: list[str]) -> None:
    """Distributed mode: a message per re-queued task (embedded: the task thread polls the table)."""
    if settings.embedded or not task_ids:
        return
    from api.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher(settings)
    for task_id in task_ids:
        try:
            dispatcher.enqueue_task(task_id)
        except Exception as exc:  # noqa: BLE001 - it stays queued; a client may ask again
            log.warning("could not re-send task %s: %s", task_id, exc)

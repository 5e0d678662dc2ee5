"""Jobs whose worker died: back to `queued`, to resume from their newest checkpoint.

A Redis visibility timeout long enough for any job cannot also be short enough to notice a dead worker, so
liveness is the job row's heartbeat instead. Whoever sweeps (the embedded worker, every Celery worker's main
process) re-queues a running job whose owner is provably gone (same host, process gone) or whose heartbeat
is older than UDS_STALE_AFTER_SECONDS. Each re-queue is a conditional UPDATE, so concurrent sweepers agree.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, update

from api.db import session_factory
from api.events import add_event
from api.models import Job, utcnow
from api.settings import Settings
from worker.identity import owner_is_dead

log = logging.getLogger(__name__)


def recover_jobs(settings: Settings, dispatch: Callable[[str], None] | None = None) -> list[str]:
    """Re-queue (or finish cancelling) running jobs with a lost owner. Returns the re-queued ids."""
    sessions = session_factory(settings.sqlalchemy_url)
    cutoff = utcnow() - dt.timedelta(seconds=settings.stale_after_seconds)
    requeued: list[str] = []
    with sessions() as session:
        running = session.execute(select(Job.id, Job.worker_id, Job.heartbeat_at, Job.cancel_requested,
                                         Job.current_step).where(Job.status == "running")).all()
        for job in running:
            stale = job.heartbeat_at is None or job.heartbeat_at < cutoff
            if not (stale or owner_is_dead(job.worker_id)):
                continue
            cancel = bool(job.cancel_requested)
            values = {"status": "cancelled", "finished_at": utcnow()} if cancel else {"status": "queued"}
            matched = session.execute(
                update(Job).where(Job.id == job.id, Job.status == "running", Job.worker_id == job.worker_id)
                .values(worker_id=None, heartbeat_at=None, **values)
            ).rowcount
            if not matched:
                continue
            why = "stopped heartbeating" if stale else "is gone"
            if cancel:
                add_event(session, job.id, "status", f"Worker {job.worker_id} {why}; the job was being cancelled, so it is "
                          "now cancelled.", data={"status": "cancelled"})
            else:
                add_event(session, job.id, "status", f"Worker {job.worker_id} {why} at step {job.current_step}; job "
                          "re-queued to resume from its newest checkpoint.", level="warning", data={"status": "queued"})
                requeued.append(job.id)
            session.commit()
    for job_id in requeued:
        log.warning("re-queued job %s (lost worker)", job_id)
        if dispatch is not None:
            dispatch(job_id)
    return requeued


class RecoveryLoop(threading.Thread):
    """Sweeps every half stale-period (a Celery worker's main process runs one)."""

    def __init__(self, settings: Settings, dispatch: Callable[[str], None] | None):
        super().__init__(name="uds-recovery", daemon=True)
        self.settings, self.dispatch = settings, dispatch
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                recover_jobs(self.settings, self.dispatch)
            except Exception:
                log.warning("recovery sweep failed", exc_info=True)
            if self.done.wait(self.settings.stale_after_seconds / 2):
                return

    def stop(self) -> None:
        self.done.set()

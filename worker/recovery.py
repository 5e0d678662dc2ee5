"""Jobs whose worker died: back to `queued`, to resume from their newest checkpoint.

A Redis visibility timeout long enough for any job cannot also be short enough to notice a dead worker, so
liveness is the job row's heartbeat instead. Whoever sweeps (the embedded worker, every Celery worker's main
process) re-queues a running job whose owner is provably gone (same host, process gone) or whose heartbeat
is older than UDS_STALE_AFTER_SECONDS. Each re-queue is a conditional UPDATE, so concurrent sweepers agree.

The same sweep (distributed mode only: embedded, the job table is the queue) re-sends the message of a job still
`queued` UDS_REDISPATCH_AFTER_SECONDS after its last send (`jobs.dispatched_at`), or never sent (NULL: the broker
refused it at creation). The message may have been lost (Redis restarted without persistence, a flush), or the job
may merely be waiting behind busy workers; a duplicate is harmless (the claim is one conditional UPDATE, so a
second message finds the job running or finished and does nothing), and the stamp is taken with a conditional
UPDATE, so however many sweepers run, a job is sent at most once per period.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from sqlalchemy import or_, select, update

from api.db import session_factory
from api.dispatch import job_devices
from api.events import add_event
from api.models import Job, utcnow
from api.settings import Settings
from worker.fairness import next_job_order, queue_snapshot
from worker.identity import owned_update, owner_is_dead, owner_lost
from worker.task_recovery import recover_tasks

log = logging.getLogger(__name__)


# Sends a queued job to the workers: (job id, devices it asks for) -> None (api.dispatch.Dispatcher.enqueue).
Dispatch = Callable[[str, int], None]


def recover_jobs(settings: Settings, dispatch: Dispatch | None = None) -> list[str]:
    """Re-queue (or finish cancelling) running jobs with a lost owner. Returns the re-queued ids."""
    sessions = session_factory(settings.sqlalchemy_url)
    cutoff = utcnow() - dt.timedelta(seconds=settings.stale_after_seconds)
    requeued: list[tuple[str, int]] = []
    with sessions() as session:
        running = session.execute(
            select(Job.id, Job.worker_id, Job.heartbeat_at, Job.cancel_requested, Job.current_step, Job.config).where(
                Job.status == "running"
            )
        ).all()
        for job in running:
            if not owner_lost(job.worker_id, job.heartbeat_at, cutoff):
                continue
            cancel = bool(job.cancel_requested)
            values = (
                {"status": "cancelled", "finished_at": utcnow()}
                if cancel
                else {"status": "queued", "dispatched_at": utcnow()}
            )
            matched = session.execute(
                owned_update(job.id, job.worker_id).values(worker_id=None, heartbeat_at=None, **values)
            ).rowcount
            if not matched:
                continue
            why = "is gone" if owner_is_dead(job.worker_id) else "stopped heartbeating"
            if cancel:
                add_event(
                    session,
                    job.id,
                    "status",
                    f"Worker {job.worker_id} {why}; the job was being cancelled, so it is now cancelled.",
                    data={"status": "cancelled"},
                )
            else:
                add_event(
                    session,
                    job.id,
                    "status",
                    f"Worker {job.worker_id} {why} at step {job.current_step}; job "
                    "re-queued to resume from its newest checkpoint.",
                    level="warning",
                    data={"status": "queued"},
                )
                requeued.append((job.id, job_devices(job.config)))
            session.commit()
    for job_id, devices in requeued:
        log.warning("re-queued job %s (lost worker)", job_id)
        if dispatch is not None:
            dispatch(job_id, devices)
    return [job_id for job_id, _ in requeued]


def redispatch_queued(settings: Settings, dispatch: Dispatch, limit: int = 200) -> list[str]:
    """Re-send queued jobs whose message was not taken within UDS_REDISPATCH_AFTER_SECONDS (or never sent),
    in turns by tenant (fair_dispatch_order), each at most once per period across all sweepers. Returns the ids
    sent."""
    sessions = session_factory(settings.sqlalchemy_url)
    period = settings.redispatch_after_seconds
    sent: list[str] = []
    with sessions() as session:
        due = session.execute(
            select(Job.id, Job.dispatched_at, Job.config).where(
                Job.status == "queued",
                or_(Job.dispatched_at.is_(None), Job.dispatched_at < utcnow() - dt.timedelta(seconds=period)),
            )
        ).all()
        due = fair_dispatch_order(session, settings, due)[:limit]
        for job in due:
            before = job.dispatched_at
            stamp = utcnow()
            # Only if nobody claimed or re-sent it since we looked: one sender per job per period.
            still_due = Job.dispatched_at.is_(None) if before is None else Job.dispatched_at == before
            matched = session.execute(
                update(Job).where(Job.id == job.id, Job.status == "queued", still_due).values(dispatched_at=stamp)
            ).rowcount
            if not matched:
                session.rollback()
                continue
            session.commit()
            try:
                dispatch(job.id, job_devices(job.config))
            except Exception as exc:
                # Undo the stamp so the next sweep tries again, and stop: the broker is down for the others too.
                session.execute(
                    update(Job).where(Job.id == job.id, Job.dispatched_at == stamp).values(dispatched_at=before)
                )
                session.commit()
                log.warning("could not re-send job %s (broker unreachable?): %s", job.id, exc)
                break
            why = (
                "the broker had not accepted it"
                if before is None
                else f"no worker had taken it within {period:g} s (all busy, or the message was lost)"
            )
            add_event(session, job.id, "dispatch", f"Job message sent to the workers again: {why}.")
            session.commit()
            sent.append(job.id)
            log.info("re-sent job %s: %s", job.id, why)
    return sent


def fair_dispatch_order(session, settings: Settings, due: list) -> list:
    """`due` in round-robin order by tenant, without the jobs a tenant at its running cap could not start now
    (worker/fairness.py); the cap applies only while more than one tenant has jobs queued, as at the claim."""
    queued, last_served, running = queue_snapshot(session)
    cap = settings.max_running_jobs_per_tenant if len({j.tenant_id for j in queued}) > 1 else 0
    by_id = {job.id: job for job in due}
    order = next_job_order([j for j in queued if j.id in by_id], last_served, running, cap)
    return [by_id[job_id] for job_id in order]


class RecoveryLoop(threading.Thread):
    """Sweeps every half stale-period, or half re-dispatch period if shorter (a Celery worker's main process runs
    one). Without `dispatch` (embedded) it only re-queues lost jobs."""

    def __init__(self, settings: Settings, dispatch: Dispatch | None):
        super().__init__(name="uds-recovery", daemon=True)
        self.settings, self.dispatch = settings, dispatch
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                recover_jobs(self.settings, self.dispatch)
                recover_tasks(self.settings)  # exports and try-it answers of a dead worker (worker/task_recovery.py)
                if self.dispatch is not None:
                    redispatch_queued(self.settings, self.dispatch)
            except Exception:
                log.warning("recovery sweep failed", exc_info=True)
            if self.done.wait(min(self.settings.stale_after_seconds, self.settings.redispatch_after_seconds) / 2):
                return

    def stop(self) -> None:
        self.done.set()

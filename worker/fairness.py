"""Fair turns across tenants: which queued job runs (or is sent to the workers) next, and when a tenant must wait.

- Embedded (one job at a time): the next job is the oldest queued job of the tenant served least recently (by when
  its last job started; a tenant never served goes first). With queued jobs of A, A, A and B, the order is A, B, A, A:
  round robin by tenant, derived from the job rows alone, so a restart keeps it.
- Distributed: a tenant may have at most UDS_MAX_RUNNING_JOBS_PER_TENANT jobs running while another tenant has a job
  queued (a claim past the cap leaves the job queued, to be sent again by the recovery sweep), and the sweep sends
  due jobs in the same round-robin order, skipping tenants at their cap.

A running job is never preempted; UDS_MAX_JOB_SECONDS bounds how long it can hold a worker.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.models import Job, Tenant

_NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class QueuedJob:
    id: str
    tenant_id: int
    created_at: dt.datetime


def next_job_order(
    queued: Iterable[QueuedJob],
    last_served: Mapping[int, dt.datetime],
    running: Mapping[int, int] | None = None,
    cap: int = 0,
) -> list[str]:
    """Job ids in fair order: round robin over tenants, least recently served first, each tenant's jobs oldest
    first. With `cap`, tenants with `cap` jobs running are left out (only the rounds still open to them remain)."""
    by_tenant: dict[int, list[QueuedJob]] = {}
    for job in sorted(queued, key=lambda j: (j.created_at, j.id)):
        by_tenant.setdefault(job.tenant_id, []).append(job)
    running = running or {}
    if cap:
        by_tenant = {t: jobs[: max(0, cap - running.get(t, 0))] for t, jobs in by_tenant.items()}
    # A tenant's turn: least recently served first; ties (never served) by its oldest queued job.
    tenants = sorted(
        by_tenant, key=lambda t: (_aware(last_served.get(t)), by_tenant[t][0].created_at if by_tenant[t] else _NEVER, t)
    )
    order: list[str] = []
    for round_ in range(max((len(jobs) for jobs in by_tenant.values()), default=0)):
        order += [by_tenant[t][round_].id for t in tenants if round_ < len(by_tenant[t])]
    return order


def _aware(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return _NEVER
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def queue_snapshot(session: Session, where=()) -> tuple[list[QueuedJob], dict[int, dt.datetime], dict[int, int]]:
    """Queued jobs (matching `where`), each tenant's last start, and each tenant's running jobs, from the rows."""
    queued = [
        QueuedJob(*row)
        for row in session.execute(select(Job.id, Job.tenant_id, Job.created_at).where(Job.status == "queued", *where))
    ]
    tenants = {job.tenant_id for job in queued}
    last_served = dict(
        session.execute(
            select(Job.tenant_id, func.max(Job.started_at)).where(Job.tenant_id.in_(tenants)).group_by(Job.tenant_id)
        ).all()
    )
    running = dict(
        session.execute(
            select(Job.tenant_id, func.count())
            .where(Job.tenant_id.in_(tenants), Job.status == "running")
            .group_by(Job.tenant_id)
        ).all()
    )
    return queued, last_served, running


def must_wait(session: Session, tenant_id: int, cap: int) -> bool:
    """True when the job's tenant already runs `cap` jobs and another tenant has a job queued. Called inside the
    claim's transaction, after locking the tenant's row, so two workers claiming for one tenant count in turn."""
    if not cap:
        return False
    # Postgres: concurrent claims of one tenant serialize here (SQLite serializes every write transaction anyway).
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(id=Tenant.id))
    running = session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status == "running"))
    if running < cap:
        return False
    others_wait = session.scalar(select(Job.id).where(Job.status == "queued", Job.tenant_id != tenant_id).limit(1))
    return others_wait is not None


def leave_for_the_sweep(session: Session, job_id: str) -> None:
    """A job refused by must_wait stays queued, marked never sent, so the next recovery sweep sends it again in
    its fair turn (its message is consumed: without this it would wait UDS_REDISPATCH_AFTER_SECONDS)."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=None))
    session.commit()

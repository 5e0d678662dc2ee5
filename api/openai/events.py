"""A job's events for /v1: its stored events (status changes, checkpoints, eval, errors) as `message` events,
merged with one `metrics` event per optimizer step, made from the step_metrics rows.

The metrics events are not stored twice: step_metrics already holds exactly one row per (job, step), written
idempotently by the worker, so every step appears exactly once however often the job resumed.

Order is newest first by (created_at, kind, key) with kind 1 for stored events and 0 for steps; `after` is the id
of the last event seen, and `has_more` is exact (limit + 1 rows are read from each source).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.errors import invalid_cursor
from api.ids import event_public_id, parse_event_id, parse_int
from api.models import Job, JobEvent, StepMetric
from api.openai.mapping import unix
from api.openai.results import metrics_record
from api.openai.schemas import JobEvent as JobEventObject

LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
STEP_ID = re.compile(r"^ftevent-([0-9a-f]{24})-step-(\d+)$")


def step_event_id(job_id: str, step: int) -> str:
    return f"ftevent-{job_id.removeprefix('ftjob-')}-step-{step}"


def _message(e: JobEvent) -> JobEventObject:
    data: dict[str, Any] = dict(e.data or {})
    data.setdefault("kind", e.type)  # the native event type: status, checkpoint, eval, started, ...
    return JobEventObject(
        id=event_public_id(e.id),
        created_at=unix(e.created_at),
        level=LEVELS.get(e.level, "info"),
        message=e.message,
        data=data,
        type="message",
    )


def _metrics(job: Job, m: StepMetric) -> JobEventObject:
    record = metrics_record(m, job.total_steps)
    text = f"Step {m.step}/{job.total_steps}: training loss={m.loss:.4f}" if m.loss is not None else f"Step {m.step}"
    if m.selected is not None and m.candidates:
        text += f", trained on {m.selected} of {m.candidates} candidates"
    if m.eval_loss is not None:
        text += f", validation loss={m.eval_loss:.4f}"
    return JobEventObject(
        id=step_event_id(job.id, m.step),
        created_at=unix(m.created_at),
        level="info",
        message=text,
        data=record,
        type="metrics",
    )


def _cursor(session: Session, job: Job, after: str):
    """(created_at, kind, key) of the event `after`."""
    step = STEP_ID.match(after)
    if step and "ftjob-" + step.group(1) == job.id and parse_int(step.group(2)) is not None:
        metric = session.get(StepMetric, (job.id, int(step.group(2))))
        if metric is not None:
            return metric.created_at, 0, metric.step
    event_id = parse_event_id(after)
    if event_id is not None:
        event = session.get(JobEvent, event_id)
        if event is not None and event.job_id == job.id:
            return event.created_at, 1, event.id
    raise invalid_cursor(f"no event {after!r} in job {job.id} to continue from.")


def list_events(session: Session, job: Job, limit: int, after: str | None) -> tuple[list[JobEventObject], bool]:
    events = select(JobEvent).where(JobEvent.job_id == job.id)
    steps = select(StepMetric).where(StepMetric.job_id == job.id)
    if after is not None:
        at, kind, key = _cursor(session, job, after)
        if kind == 1:  # stored events at the same instant come first, so every step at that instant follows
            events = events.where(or_(JobEvent.created_at < at, and_(JobEvent.created_at == at, JobEvent.id < key)))
            steps = steps.where(StepMetric.created_at <= at)
        else:
            events = events.where(JobEvent.created_at < at)
            steps = steps.where(
                or_(StepMetric.created_at < at, and_(StepMetric.created_at == at, StepMetric.step < key))
            )
    rows: list[tuple[tuple[Any, int, int], JobEvent | StepMetric]] = [
        ((e.created_at, 1, e.id), e)
        for e in session.scalars(events.order_by(JobEvent.created_at.desc(), JobEvent.id.desc()).limit(limit + 1))
    ]
    rows += [
        ((m.created_at, 0, m.step), m)
        for m in session.scalars(steps.order_by(StepMetric.created_at.desc(), StepMetric.step.desc()).limit(limit + 1))
    ]
    rows.sort(key=lambda r: r[0], reverse=True)
    page = [_message(item) if isinstance(item, JobEvent) else _metrics(job, item) for _, item in rows[:limit]]
    return page, len(rows) > limit

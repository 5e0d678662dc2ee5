"""/api/v1/jobs: create, list, get, cancel, delete; and the job's metrics, selections, events, checkpoints, adapter."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import and_, case, func, or_, select

from api import previews, transfers
from api.conditional import NOT_MODIFIED, conditional, row_state
from api.deps import CurrentTenant, JobDep, SessionDep, SettingsDep, read_outside_a_transaction
from api.errors import APIError, invalid_cursor
from api.ids import MAX_INT, event_public_id, parse_event_id, parse_int
from api.limits import RateLimited
from api.models import (
    Dataset,
    Job,
    JobEvent,
    JobStatus,
    Selection,
    StepMetric,
    utcnow,
)
from api.pagination import AfterParam, LimitParam, fetch_page, newest_first
from api.query import KNOWN_QUERY, known_query_only
from api.schemas import (
    CheckpointPublic,
    EventPublic,
    JobCreate,
    JobDeleted,
    JobPublic,
    LengthBiasPublic,
    ListPage,
    MetricsPage,
    RowSummary,
    SelectionPublic,
    SelectionSummary,
    event_public,
    job_public,
    metric_public,
)
from api.schemas.estimates import JobEstimate
from api.services import jobs as job_service
from api.services.estimates import job_estimate
from api.services.length_bias import job_length_bias

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobPublic, dependencies=[RateLimited])
def create_job(body: JobCreate, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    return job_public(job_service.create_job(session, tenant, settings, request.app.state.dispatcher, body))


@router.post("/estimate", response_model=JobEstimate)
def estimate_job(body: JobCreate, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    """What `POST /jobs` with this body would cost: steps, candidates, examples and tokens, peak memory per device,
    and the time at this deployment's measured speed. Same validation and errors as creating it; creates nothing."""
    return job_estimate(session, tenant, settings, body)


StatusFilter = Annotated[JobStatus | None, Query(description="Only jobs in this status.")]


@router.get("", response_model=ListPage[JobPublic], responses=NOT_MODIFIED, dependencies=[known_query_only("metadata")])
def list_jobs(
    request: Request,
    response: Response,
    session: SessionDep,
    tenant: CurrentTenant,
    limit: LimitParam = 20,
    after: AfterParam = None,
    status: StatusFilter = None,
):
    """Newest first. Filter with `status`, and with `metadata[key]=value` (repeatable; all must match; a number or
    boolean matches its JSON text, `metadata[run]=3`) or `metadata=null` for jobs without metadata."""
    read_outside_a_transaction(session)  # reads only, like the lookups
    stmt = job_service.where_metadata(
        session, select(Job).where(Job.tenant_id == tenant.id), request.query_params.multi_items()
    )
    if status is not None:
        stmt = stmt.where(Job.status == status)
    rows, has_more = newest_first(session, Job, stmt, after, limit, tenant.id)
    if (unchanged := conditional(request, response, tenant.id, has_more, [row_state(j) for j in rows])) is not None:
        return unchanged
    now = utcnow()
    data = [job_public(j, now) for j in rows]
    return ListPage[JobPublic].page(data, has_more=has_more)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_MODIFIED)
async def get_job(job: JobDep, request: Request, response: Response):
    # async: the most polled route reads nothing more (the lookup loaded the row), so it skips a threadpool hop
    if (unchanged := conditional(request, response, row_state(job))) is not None:
        return unchanged
    return job_public(job)


@router.delete("/{job_id}", response_model=JobDeleted)
def delete_job(job: JobDep, session: SessionDep, settings: SettingsDep):
    """A finished job (succeeded, failed, cancelled) with its metrics, selections, events, checkpoints, exports and
    files. 409 `job_not_finished` while it is queued or running (cancel it first), 409 `job_in_use` while an export
    or try-it of it is unfinished."""
    job_service.delete_job(session, settings, job)
    return JobDeleted(id=job.id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job: JobDep, session: SessionDep):
    """Queued: cancelled now. Running: flagged; the worker's should_stop() sees it before the next step."""
    return job_public(job_service.cancel_job(session, job))


@router.get("/{job_id}/metrics", response_model=MetricsPage, responses=NOT_MODIFIED, dependencies=[KNOWN_QUERY])
def job_metrics(
    job: JobDep,
    session: SessionDep,
    request: Request,
    response: Response,
    after_step: Annotated[int, Query(ge=0, le=MAX_INT, description="Only steps after this one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    # The job row is the validator: the worker writes step metrics only in the transaction that also stamps the
    # job's progress (worker/db_logger.py), so no metric changes without the row changing. No query for a 304.
    if (unchanged := conditional(request, response, row_state(job))) is not None:
        return unchanged
    stmt = select(StepMetric).where(StepMetric.job_id == job.id, StepMetric.step > after_step).order_by(StepMetric.step)
    rows, has_more = fetch_page(session, stmt, limit)
    return MetricsPage(
        data=[metric_public(m) for m in rows], has_more=has_more, last_step=rows[-1].step if rows else after_step
    )


@router.get("/{job_id}/length-bias", response_model=LengthBiasPublic, responses=NOT_MODIFIED)
def job_length_bias_route(job: JobDep, session: SessionDep, request: Request, response: Response):
    """Whether the job picked the longest examples rather than the most useful: its per-step length diagnostic
    aggregated over all its selection groups so far."""
    # Made of every step's metrics (the job row moves with them, as for the metrics route) and the run summary in
    # its events: a 304 spares reading all the steps, which the dashboard's job page asks for at every poll.
    read_outside_a_transaction(session)
    if (
        unchanged := conditional(request, response, row_state(job), job_service.events_state(session, job))
    ) is not None:
        return unchanged
    return LengthBiasPublic(**job_length_bias(session, job))


def _parse_selection_cursor(after: str) -> tuple[int, int]:
    step, _, row = after.partition(":")
    if parse_int(step) is None or parse_int(row) is None:
        raise invalid_cursor(f"expected '<step>:<row>' (a selection id), got {after!r}.")
    return int(step), int(row)


@router.get("/{job_id}/selections", response_model=ListPage[SelectionPublic], dependencies=[KNOWN_QUERY])
def job_selections(
    job: JobDep,
    session: SessionDep,
    settings: SettingsDep,
    selected: Annotated[bool | None, Query(description="Only trained-on (true) or skipped (false).")] = None,
    step: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: AfterParam = None,
):
    """Newest step first; within a step, by dataset row."""
    stmt = select(Selection).where(Selection.job_id == job.id)
    if selected is not None:
        stmt = stmt.where(Selection.selected.is_(selected))
    if step is not None:
        stmt = stmt.where(Selection.step == step)
    if after is not None:
        s, r = _parse_selection_cursor(after)
        stmt = stmt.where(or_(Selection.step < s, and_(Selection.step == s, Selection.row > r)))
    rows, has_more = fetch_page(session, stmt.order_by(Selection.step.desc(), Selection.row), limit)
    examples = previews.examples_for(settings, session.get(Dataset, job.dataset_id)) if rows else None
    shown = previews.previews_of(examples, (s.row for s in rows))
    data = [
        SelectionPublic(
            id=f"{s.step}:{s.row}",
            step=s.step,
            row=s.row,
            selected=s.selected,
            utility=s.utility,
            diversity=s.diversity,
            score=s.score,
            preview=shown[s.row],
        )
        for s in rows
    ]
    return ListPage[SelectionPublic].page(data, has_more=has_more)


@router.get("/{job_id}/selections/summary", response_model=SelectionSummary, dependencies=[KNOWN_QUERY])
def selection_summary(
    job: JobDep,
    session: SessionDep,
    settings: SettingsDep,
    order: Literal["most", "least"] = "most",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
):
    """Per dataset row: how often it was a candidate and how often it was picked (rows never drawn are absent)."""
    times_selected = func.sum(case((Selection.selected.is_(True), 1), else_=0)).label("times_selected")
    times_candidate = func.count().label("times_candidate")
    stmt = (
        select(Selection.row, times_selected, times_candidate, func.avg(Selection.score), func.max(Selection.step))
        .where(Selection.job_id == job.id)
        .group_by(Selection.row)
    )
    if order == "most":
        stmt = stmt.order_by(times_selected.desc(), times_candidate.desc(), Selection.row)
    else:  # rows seen most often yet picked least: what the method judged redundant or unhelpful
        stmt = stmt.order_by(times_selected.asc(), times_candidate.desc(), Selection.row)
    rows = session.execute(stmt.offset(offset).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    rows_seen = session.scalar(select(func.count(func.distinct(Selection.row))).where(Selection.job_id == job.id))
    examples = previews.examples_for(settings, session.get(Dataset, job.dataset_id)) if rows else None
    shown = previews.previews_of(examples, (r for r, *_ in rows))
    data = [
        RowSummary(
            row=r,
            times_selected=int(ts or 0),
            times_candidate=int(tc),
            mean_score=avg,
            last_step=last,
            preview=shown[r],
        )
        for r, ts, tc, avg, last in rows
    ]
    return SelectionSummary(data=data, has_more=has_more, order=order, rows_seen=rows_seen or 0)


@router.get(
    "/{job_id}/events", response_model=ListPage[EventPublic], responses=NOT_MODIFIED, dependencies=[KNOWN_QUERY]
)
def job_events(
    job: JobDep,
    session: SessionDep,
    request: Request,
    response: Response,
    limit: LimitParam = 20,
    after: AfterParam = None,
):
    """Newest first; `after=<event id>` continues with older events."""
    stmt = select(JobEvent).where(JobEvent.job_id == job.id)
    if after is not None:
        event_id = parse_event_id(after)
        if event_id is None:
            raise invalid_cursor(f"expected an event id like 'ftevent-12', got {after!r}.")
        stmt = stmt.where(JobEvent.id < event_id)
    read_outside_a_transaction(session)  # reads only, like the lookups
    if (unchanged := conditional(request, response, job.tenant_id, job_service.events_state(session, job))) is not None:
        return unchanged
    rows, has_more = fetch_page(session, stmt.order_by(JobEvent.id.desc()), limit)
    data = [event_public(e) for e in rows]
    return ListPage[EventPublic].page(data, has_more=has_more)


@router.get("/{job_id}/checkpoints", response_model=ListPage[CheckpointPublic], dependencies=[KNOWN_QUERY])
def job_checkpoints(
    job: JobDep, session: SessionDep, settings: SettingsDep, limit: LimitParam = 20, after: AfterParam = None
):
    """Newest step first; `after=<checkpoint id>` continues with older ones."""
    return job_service.checkpoint_page(session, job, settings, limit, after)


@router.get(
    "/{job_id}/adapter",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}, "description": "tar.gz of the PEFT folder"}},
)
def job_adapter(job: JobDep, request: Request, settings: SettingsDep):
    """The PEFT adapter folder as .tar.gz; its sha256 is in `X-Checksum-SHA256` (and in the job's `adapter`)."""
    if job.status != "succeeded" or not job.adapter_path:
        raise APIError(
            404,
            f"Job {job.id} has no adapter: it is {job.status}; an adapter exists once it has succeeded.",
            code="adapter_not_found",
            param="id",
        )
    path = settings.served_file(job.adapter_path)
    if path is None:
        raise APIError(
            404,
            f"The adapter archive of job {job.id} is missing from the artifact store.",
            code="adapter_not_found",
            param="id",
        )
    # Streamed in chunks (never loaded into memory), with no database connection held, under the download caps.
    return transfers.file_response(
        request,
        settings,
        path,
        media_type="application/gzip",
        filename=f"{job.id}-adapter.tar.gz",
        headers={"X-Checksum-SHA256": job.adapter_sha256 or ""},
    )


__all__ = ["router", "event_public_id"]

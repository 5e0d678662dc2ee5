"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints. The rows are the native jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from api.conditional import NOT_MODIFIED, conditional, row_state
from api.deps import CurrentTenant, JobDep, SessionDep, SettingsDep, read_outside_a_transaction
from api.errors import APIError
from api.ids import fine_tuned_model_name
from api.limits import RateLimited
from api.models import Job, Tenant, utcnow
from api.openai import results
from api.openai.errors import openai_errors
from api.openai.events import list_events
from api.openai.mapping import job_object, to_native, unix
from api.openai.schemas import (
    CheckpointMetrics,
    CursorList,
    FineTuningJob,
    FineTuningJobCreate,
    JobCheckpoint,
    JobEvent,
)
from api.pagination import newest_first
from api.query import KNOWN_QUERY, known_query_only
from api.services import jobs as job_service

router = APIRouter(prefix="/fine_tuning/jobs", tags=["openai: fine-tuning"])

After = Annotated[str | None, Query(max_length=128, description="The id of the last object of the previous page.")]


def render(session, settings, tenant: Tenant, jobs: list[Job]) -> list[FineTuningJob]:
    files = results.result_files(session, settings, jobs)
    now = utcnow()
    return [job_object(j, tenant.name, files.get(j.id, []), now) for j in jobs]


@router.post("", response_model=FineTuningJob, dependencies=[RateLimited])
def create_job(
    body: FineTuningJobCreate, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
):
    """The OpenAI request; UDS settings (`selection_method`, `budget`, `alpha`, `candidate_batch_size`, LoRA
    settings, ...) as extra fields. The job is queued at once (training files are validated at upload)."""
    native, sources = to_native(body)
    with openai_errors(sources):
        job = job_service.create_job(session, tenant, settings, request.app.state.dispatcher, native)
    return render(session, settings, tenant, [job])[0]


@router.get("", response_model=CursorList[FineTuningJob], dependencies=[known_query_only("metadata")])
def list_jobs(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    """Newest first. Filter with `metadata[key]=value` (repeatable) or `metadata=null`."""
    stmt = job_service.where_metadata(
        session, select(Job).where(Job.tenant_id == tenant.id), request.query_params.multi_items()
    )
    rows, has_more = newest_first(session, Job, stmt, after, limit, tenant.id)
    data = render(session, settings, tenant, rows)
    return CursorList[FineTuningJob].page(data, has_more=has_more)


@router.get("/{job_id}", response_model=FineTuningJob, responses=NOT_MODIFIED)
def retrieve_job(
    job: JobDep, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep, request: Request, response: Response
):
    # Its result files are recorded at the first read after the job succeeded, with ids fixed by the job.
    if (unchanged := conditional(request, response, row_state(job), tenant.name)) is not None:
        return unchanged
    return render(session, settings, tenant, [job])[0]


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(job: JobDep, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    """Queued: cancelled at once. Running: stops before its next step (status `running` until then). A finished
    job cannot be cancelled: 400."""
    with openai_errors():
        job = job_service.cancel_job(session, job)
    return render(session, settings, tenant, [job])[0]


@router.post("/{job_id}/pause", response_model=FineTuningJob, include_in_schema=False)
@router.post("/{job_id}/resume", response_model=FineTuningJob, include_in_schema=False)
def pause_or_resume(job: JobDep):
    raise APIError(
        400,
        "Pausing and resuming jobs is not supported; cancel the job instead (its checkpoints stay).",
        code="unsupported_operation",
        param="id",
    )


@router.get("/{job_id}/events", response_model=CursorList[JobEvent], responses=NOT_MODIFIED, dependencies=[KNOWN_QUERY])
def job_events(
    job: JobDep,
    session: SessionDep,
    request: Request,
    response: Response,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
):
    """Newest first: status messages and one `metrics` event per step (loss, accuracy, selection statistics)."""
    # Stored events, and step metrics (which change only with the job row: see the native metrics route).
    read_outside_a_transaction(session)  # reads only, like the lookups
    validator = (row_state(job), job_service.events_state(session, job))
    if (unchanged := conditional(request, response, *validator)) is not None:
        return unchanged
    data, has_more = list_events(session, job, limit, after)
    return CursorList[JobEvent].page(data, has_more=has_more)


@router.get("/{job_id}/checkpoints", response_model=CursorList[JobCheckpoint], dependencies=[KNOWN_QUERY])
def job_checkpoints(
    job: JobDep,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
):
    """Newest step first. `fine_tuned_model_checkpoint` names the checkpoint; its weights are in the job's folder."""
    page = job_service.checkpoint_page(session, job, settings, limit, after)
    name = fine_tuned_model_name(job.model, tenant.name, job.suffix, job.id)
    data = []
    for c in page.data:
        m = c.metrics or {}
        extra = {"valid_exact_match": m["eval_accuracy"]} if m.get("eval_accuracy") is not None else {}
        metrics = CheckpointMetrics(
            step=c.step,
            train_loss=m.get("loss"),
            train_mean_token_accuracy=m.get("token_accuracy"),
            valid_loss=m.get("eval_loss"),
            full_valid_loss=m.get("eval_loss"),
            **extra,
        )
        data.append(
            JobCheckpoint(
                id=c.id,
                created_at=unix(c.created_at),
                fine_tuned_model_checkpoint=f"{name}:ckpt-step-{c.step}",
                fine_tuning_job_id=job.id,
                metrics=metrics,
                step_number=c.step,
                available=c.available,
            )
        )
    return CursorList[JobCheckpoint](data=data, has_more=page.has_more, first_id=page.first_id, last_id=page.last_id)

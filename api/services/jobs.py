"""Jobs: creation (validated, resolved, queued and dispatched), cancellation, deletion, the metadata filter of both
job lists, and the fine-tuned model's name."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import JSON, CursorResult, Result, Select, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from api.costs import JobShape, check_job_cost, check_job_devices, checkpoint_state_bytes
from api.dispatch import Dispatcher, job_devices
from api.errors import APIError, invalid_cursor, not_found, param_error
from api.events import add_event
from api.ids import new_job_id, parse_checkpoint_id
from api.limits import count_locked
from api.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Checkpoint,
    Dataset,
    Job,
    JobEvent,
    JobTask,
    ResultFile,
    Selection,
    StepMetric,
    Tenant,
    WebhookDelivery,
    utcnow,
)
from api.pagination import fetch_page
from api.schemas import HOST_FIELDS, CheckpointPublic, JobCreate, ListPage, checkpoint_public
from api.schemas.integrations import check_integrations
from api.services.models import BaseModel, base_model, check_job_fits_model
from api.settings import Settings
from api.storage import check_quota
from api.validation import check_int32, check_values

log = logging.getLogger(__name__)


def dataset_for_job(session: Session, tenant: Tenant, dataset_id: str, param: str) -> Dataset:
    # FOR UPDATE pairs with delete_dataset: the dataset cannot vanish between this check and the commit.
    dataset = session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant.id).with_for_update()
    )
    if dataset is None:
        raise not_found("dataset", dataset_id, param)
    if dataset.status != "processed":
        raise APIError(
            400, f"Dataset {dataset_id} is not ready (status {dataset.status}).", code="dataset_not_ready", param=param
        )
    return dataset


def create_job(session: Session, tenant: Tenant, settings: Settings, dispatcher: Dispatcher, body: JobCreate) -> Job:
    """Validate `body` with TrainConfig, store the resolved configuration, queue the job and dispatch it.

    Errors name the native fields (`dataset_id`, `eval_dataset_id`, `model`, TrainConfig settings) in `param`.
    """
    job = add_job(session, tenant, settings, body)
    check_active_jobs(session, tenant, settings, adding=1)
    session.commit()
    dispatch_job(session, dispatcher, job)
    return job


@dataclass(frozen=True)
class CheckedJob:
    """A job request that passed every submit-time check: what `add_job` stores and the estimate computes from."""

    model: BaseModel
    config: Any  # uds.config.TrainConfig (imported lazily, as add_job always did)
    dataset: Dataset
    resolved: dict[str, Any]  # the stored configuration: the resolved TrainConfig minus host paths
    shape: JobShape
    integrations: Any


def check_job(session: Session, tenant: Tenant, settings: Settings, body: JobCreate) -> CheckedJob:
    """Every check of a job request, with the 4xx that creating the job answers; nothing is written."""
    from uds.config import ConfigError, TrainConfig, groups_per_step, total_steps

    # Unstorable text or numbers anywhere in the request (NUL, lone surrogates, NaN), and a seed outside its column.
    for name, value in body.model_dump(exclude_unset=True).items():
        check_values(value, name)
    check_int32(body.seed, "seed")
    model = base_model(settings, body.model)
    values = body.train_settings()
    values.setdefault("checkpoint_every", settings.checkpoint_every)
    try:
        # from_dict, not TrainConfig(**values): a recipe fills only what was not given, so a setting given equal
        # to its dataclass default still wins, and the stored config is the fully resolved one.
        config = TrainConfig.from_dict(values)
    except ConfigError as exc:
        raise param_error(exc.param, exc.message) from None
    check_job_fits_model(model, config, targets_given=body.lora_targets is not None)
    dataset = dataset_for_job(session, tenant, body.dataset_id, "dataset_id")
    if body.eval_dataset_id is not None:
        dataset_for_job(session, tenant, body.eval_dataset_id, "eval_dataset_id")

    integrations = check_integrations(body.integrations, settings)
    resolved = {k: v for k, v in config.to_dict().items() if k not in HOST_FIELDS}
    shape = JobShape(
        total_steps=total_steps(config, dataset.n_examples),
        candidates_per_step=config.candidate_batch_size * groups_per_step(config, dataset.n_examples),
    )
    check_job_devices(resolved, settings)
    check_job_cost(resolved, shape, settings)
    check_quota(
        settings,
        session,
        tenant.id,
        checkpoint_state_bytes(resolved),
        "this job's checkpoint state",
        "keep_checkpoints",
        checkpoint_state_bytes,
    )
    return CheckedJob(model, config, dataset, resolved, shape, integrations)


def add_job(
    session: Session, tenant: Tenant, settings: Settings, body: JobCreate, comparison_id: str | None = None
) -> Job:
    """Validate `body`, then add the job, queued, with its events, to the session's transaction: nothing is
    committed or dispatched, so a caller can add several jobs and keep all or none (api/services/comparisons.py).
    On an error the caller's transaction must not be committed (some checks roll it back themselves). The caller
    checks the tenant's cap on unfinished jobs (`check_active_jobs`), commits, then dispatches (`dispatch_job`)."""
    checked = check_job(session, tenant, settings, body)
    config, dataset, resolved, shape = checked.config, checked.dataset, checked.resolved, checked.shape
    integrations = checked.integrations
    job = Job(
        id=new_job_id(),
        tenant_id=tenant.id,
        name=body.name,
        suffix=body.suffix,
        status="validating_files",
        cancel_requested=False,
        model=config.model,
        method=config.method,
        config=resolved,
        dataset_id=dataset.id,
        eval_dataset_id=body.eval_dataset_id,
        metadata_=body.metadata,
        seed=config.seed,
        integrations=integrations,
        comparison_id=comparison_id,
        created_at=utcnow(),
        total_steps=shape.total_steps,
        current_step=0,
        examples_scored=0,
        examples_trained=0,
        tokens_trained=0,
        attempts=0,
        attempt_start_step=0,
    )
    session.add(job)
    session.flush()
    # Holding the write lock now (SQLite takes it at the first write), make sure the datasets were not deleted
    # since we read them: delete_dataset checks for users under the same lock, so one of the two always wins.
    for param, dataset_id in (("dataset_id", dataset.id), ("eval_dataset_id", body.eval_dataset_id)):
        if dataset_id is not None and session.scalar(select(Dataset.id).where(Dataset.id == dataset_id)) is None:
            session.rollback()
            raise not_found("dataset", dataset_id, param)
    add_event(
        session,
        job.id,
        "status",
        f"Job created: {config.method} at budget {config.budget:g} on {config.model}, {job.total_steps} steps.",
        data={"status": "validating_files"},
    )
    # Datasets are validated in full at upload, so the file check is a lookup; the state still exists so the
    # lifecycle matches the OpenAI one clients know.
    job.status = "queued"
    # Stamped before the send: if this process dies between the commit and the send, the sweep re-sends the job
    # UDS_REDISPATCH_AFTER_SECONDS later, as it does for a message the broker lost.
    job.dispatched_at = utcnow()
    add_event(
        session,
        job.id,
        "status",
        f"Files validated ({dataset.n_examples} examples); job queued.",
        data={"status": "queued"},
    )
    return job


def events_state(session: Session, job: Job) -> tuple[int, int | None]:
    """How many events the job has and its newest one's id: one index-only read (job_id, id) that changes whenever
    an event is added (events are never edited, and go only with their job). Two writers can commit ids out of
    order, so the count is needed beside the maximum."""
    count, newest = session.execute(select(func.count(), func.max(JobEvent.id)).where(JobEvent.job_id == job.id)).one()
    return count, newest


def dispatch_job(session: Session, dispatcher: Dispatcher, job: Job) -> None:
    """Send a committed, queued job to the workers."""
    try:
        dispatcher.enqueue(job.id, job_devices(job.config))
    except Exception as exc:
        # The job exists and stays queued: failing it (or answering 5xx, which clients retry into a second job)
        # would lose a request the service can still honour. NULL dispatched_at = "never sent": the workers'
        # next sweep sends it as soon as the broker takes messages again.
        log.warning("could not dispatch %s now; the recovery sweep will send it: %s", job.id, exc)
        session.execute(update(Job).where(Job.id == job.id, Job.status == "queued").values(dispatched_at=None))
        add_event(
            session,
            job.id,
            "dispatch",
            f"The broker did not take the job's message ({type(exc).__name__}: "
            f"{str(exc)[:200]}); it stays queued and is sent again by the workers' next recovery sweep.",
            level="warning",
        )
        session.commit()
        session.refresh(job)


def check_active_jobs(session: Session, tenant: Tenant, settings: Settings, adding: int) -> None:
    """The per-tenant cap on unfinished jobs, counted after our `adding` inserts and under a lock on the tenant row
    (Postgres) or the write lock (SQLite), so concurrent creations cannot both slip under it. Rolls back and
    raises when over it."""
    if not settings.max_active_jobs:
        return
    active = count_locked(
        session,
        tenant.id,
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id, Job.status.in_(ACTIVE_STATUSES)),
    )
    if active > settings.max_active_jobs:
        session.rollback()
        cap = f"UDS_MAX_ACTIVE_JOBS={settings.max_active_jobs}"
        message = (
            f"This tenant already has {active - 1} unfinished jobs, the most allowed at once ({cap}); wait for one "
            "to finish or cancel one."
            if adding == 1
            else f"This tenant has {active - adding} unfinished jobs; {adding} more would make {active}, over the most "
            f"allowed at once ({cap}); wait for jobs to finish, cancel some, or ask for fewer."
        )
        # 400, not 409 or 429: clients retry those at once, and this clears only when a job finishes.
        raise APIError(400, message, code="too_many_active_jobs")


def cancel_job(session: Session, job: Job) -> Job:
    """Queued: cancelled now. Running: flagged; the worker's should_stop() sees it before the next step.
    A finished job is refused with 400 `job_not_cancellable` (permanent, so not a 409 clients would retry)."""
    if job.status in FINISHED_STATUSES:
        raise _not_cancellable(job)
    # Conditional updates, so a worker claiming or finishing the job at the same moment is never overwritten.
    before_start = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.in_(("validating_files", "queued")))
            .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        )
    )
    if before_start:
        add_event(session, job.id, "status", "Job cancelled before it started.", data={"status": "cancelled"})
    else:
        flagged = _rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "running", Job.cancel_requested.is_(False))
                .values(cancel_requested=True)
            )
        )
        if flagged:
            add_event(session, job.id, "cancel_requested", "Cancellation requested; the job stops at the next step.")
    session.commit()
    session.refresh(job)
    if job.status in ("succeeded", "failed"):  # it finished between our read and our update
        raise _not_cancellable(job)
    return job


def _rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE matched: its Result is a CursorResult, though Session.execute is typed as a plain Result."""
    return cast(CursorResult[Any], result).rowcount


def _not_cancellable(job: Job) -> APIError:
    return APIError(
        400,
        f"Job {job.id} has already {job.status}; only queued or running jobs can be cancelled.",
        code="job_not_cancellable",
        param="id",
    )


def delete_job(session: Session, settings: Settings, job: Job, with_its_comparison: bool = False) -> None:
    """A finished job (succeeded, failed, cancelled) and everything of it: its rows (events, metrics, selections,
    checkpoints, result files, exports and try-it answers, sent webhook deliveries) and its folder `jobs/<id>`.
    409 `job_not_finished` while it is queued or running, 409 `job_in_use` while an export or try-it of it is,
    409 `job_in_comparison` for a run of a comparison unless the comparison itself is being deleted: its report
    would otherwise go on claiming a complete set of paired runs."""
    job_id = job.id
    if job.comparison_id is not None and not with_its_comparison:
        raise APIError(
            409,
            f"Job {job_id} is a run of comparison {job.comparison_id}, whose report pairs it with the others; delete "
            f"the comparison (DELETE /api/v1/comparisons/{job.comparison_id}) to delete its runs.",
            code="job_in_comparison",
            param="id",
        )
    # Postgres: wait for a claim or cancel in flight on this row, and keep task creations (their foreign key takes
    # a share lock on it) out until we commit.
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
    # The status check is a conditional UPDATE and the transaction's first write: SQLite has no FOR UPDATE and takes
    # its write lock only here, so no claim, cancel or task can come between this check and the commit.
    finished = _rowcount(
        session.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(FINISHED_STATUSES)).values(status=Job.status)
        )
    )
    if not finished:
        current = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
        session.rollback()
        if current is None:  # deleted meanwhile by another request
            raise not_found("job", job_id)
        what = (
            "cancel it first, or wait for it to finish"
            if not current.cancel_requested
            else "its cancellation was requested; wait for it to stop"
        )
        raise APIError(
            409,
            f"Job {job_id} is {current.status}; only finished jobs (succeeded, failed, cancelled) "
            f"can be deleted: {what}.",
            code="job_not_finished",
            param="id",
        )
    task = session.execute(
        select(JobTask.id, JobTask.kind)
        .where(JobTask.job_id == job_id, JobTask.status.in_(("queued", "running")))
        .limit(1)
    ).first()
    if task is not None:
        session.rollback()
        what = "export" if task.kind == "export" else "try-it generation"
        raise APIError(
            409,
            f"Job {job_id} has an unfinished {what} ({task.id}); wait for it (or cancel it) and delete the job then.",
            code="job_in_use",
            param="id",
        )
    # Explicit, not left to ON DELETE CASCADE alone: the rows go whatever the database's foreign-key setting.
    for model in (Selection, StepMetric, JobEvent, Checkpoint, ResultFile, JobTask):
        session.execute(delete(model).where(model.job_id == job_id))
    # Deliveries still pending announce a status change that did happen: they are still sent (their body is
    # stored on the row); the others are the webhook's log of this job.
    session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.job_id == job_id, WebhookDelivery.status != "pending")
    )
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()
    # After the commit: a failed commit must leave the files of the rows that remain.
    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)


def metadata_filter(items: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """`metadata[k]=v` query pairs (all must match), or `metadata=null` for jobs without metadata (both job lists)."""
    pairs, null = [], False
    for key, value in items:
        if key == "metadata":
            if value != "null":
                raise APIError(
                    400,
                    "metadata: filter with metadata[key]=value, or metadata=null.",
                    code="invalid_value",
                    param="metadata",
                )
            null = True
        elif key.startswith("metadata"):
            name = key[len("metadata[") : -1] if key.startswith("metadata[") and key.endswith("]") else ""
            if not name:
                raise APIError(
                    400,
                    f"{key}: filter with metadata[key]=value (a key in the brackets), or metadata=null.",
                    code="invalid_value",
                    param=key,
                )
            pairs.append((name, value))
    if null and pairs:
        raise APIError(
            400,
            "metadata: metadata=null cannot be combined with metadata[key]=value.",
            code="invalid_value",
            param="metadata",
        )
    return pairs, null


def _metadata_matches(key: str, value: str, sqlite: bool):
    # `->>` gives a scalar's text on Postgres: "a" -> a, 3 -> 3, true -> true. SQLite's json_extract gives 1 for
    # true, so there a boolean is matched by its json_type, and `metadata[ok]=true` finds {"ok": true} on both.
    value_text = Job.metadata_[key].as_string() == value
    if not sqlite:
        return value_text
    kind = func.json_type(Job.metadata_, '$."' + key + '"')
    match = case((kind.in_(("true", "false")), kind == value), else_=value_text)
    # SQLite keeps JSON as text, and older versions stored NaN in it, which is not JSON: one such row made
    # json_extract fail the whole query, a 500 on every filtered list of that tenant. CASE (unlike AND) is sure
    # to skip the extract on such a row, which then matches no filter.
    return case((func.json_valid(Job.metadata_) == 1, match), else_=False)


def where_metadata(session: Session, stmt: Select, items: Iterable[tuple[str, str]]) -> Select:
    """`stmt` (over jobs) narrowed by the `metadata[...]` parameters among the query's `items`."""
    pairs, null = metadata_filter(items)
    sqlite = session.get_bind().dialect.name == "sqlite"
    for key, value in pairs:
        stmt = stmt.where(_metadata_matches(key, value, sqlite))
    if null:
        # Python None is stored as JSON null by the JSON type, not SQL NULL: accept both.
        stmt = stmt.where(or_(Job.metadata_.is_(None), Job.metadata_ == JSON.NULL))
    return stmt


def checkpoint_page(
    session: Session, job: Job, settings: Settings, limit: int, after: str | None
) -> ListPage[CheckpointPublic]:
    """A job's checkpoints, newest step first; `after=<checkpoint id>` continues with older ones (both APIs)."""
    stmt = select(Checkpoint).where(Checkpoint.job_id == job.id)
    if after is not None:
        key = parse_checkpoint_id(after)
        if key is None:
            raise invalid_cursor(f"expected a checkpoint id like 'ftckpt-5f0c2a9e41d7b3c8', got {after!r}.")
        cursor = session.get(Checkpoint, key)
        if cursor is None or cursor.job_id != job.id:
            raise invalid_cursor(f"no checkpoint {after!r} in this job.")
        stmt = stmt.where(Checkpoint.step < cursor.step)
    rows, has_more = fetch_page(session, stmt.order_by(Checkpoint.step.desc()), limit)
    data = [checkpoint_public(c, settings.resolve(c.path).exists()) for c in rows]
    return ListPage[CheckpointPublic].page(data, has_more=has_more)

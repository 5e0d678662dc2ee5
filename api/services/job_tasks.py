"""Creating and finding short tasks on a job (merged and GGUF exports, try-it generations) within the caller's
tenant."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.costs import checkpoint_state_bytes
from api.dispatch import Dispatcher
from api.errors import APIError, not_found
from api.limits import count_locked
from api.models import Job, JobTask, Tenant, utcnow
from api.services.models import find_base_model
from api.settings import Settings
from api.storage import check_quota, model_bytes
from uds.gguf_support import GGUFUnsupported, check_exportable  # torch-free: reads the model's JSON files

log = logging.getLogger(__name__)
PREFIXES = {"export": "export-", "generate": "gen-"}
UNFINISHED = ("queued", "running")


def _require_succeeded(job: Job, what: str) -> None:
    if job.status != "succeeded":
        raise APIError(
            409,
            f"Job {job.id} is {job.status}; {what} needs a job that has succeeded.",
            code="job_not_succeeded",
            param="job_id",
        )


def create_task(
    session: Session,
    dispatcher: Dispatcher,
    job: Job,
    kind: str,
    params: dict,
    cap: Callable[[Session], None] | None = None,
) -> JobTask:
    """Store and dispatch a task; `cap(session)` runs after the row is flushed and before the commit, so a
    per-tenant cap counts concurrent creations in turn (api/limits.count_locked); it rolls back and raises."""
    task = JobTask(
        id=PREFIXES[kind] + secrets.token_hex(12),
        tenant_id=job.tenant_id,
        job_id=job.id,
        kind=kind,
        status="queued",
        params=params,
        cancel_requested=False,
        created_at=utcnow(),
    )
    session.add(task)
    if cap is not None:
        session.flush()
        cap(session)
    session.commit()
    try:
        dispatcher.enqueue_task(task.id)
    except Exception as exc:  # the row stays queued; a client sees it and may ask again
        log.warning("could not dispatch task %s: %s", task.id, exc)
        raise APIError(
            503, "The workers' queue did not take the task; try again shortly.", code="queue_unavailable"
        ) from exc
    return task


def request_export(
    session: Session, dispatcher: Dispatcher, settings: Settings, job: Job, params: dict
) -> tuple[JobTask, bool]:
    """(export, created): an unfinished or succeeded export with the same params (kind, quantization) is returned
    instead of a second one; two requests at once make one (the check and the insert hold the job row's lock)."""
    _require_succeeded(job, "an export")
    if params["kind"] == "gguf":
        check_gguf_model(settings, job)
    # Postgres: FOR UPDATE serialises requests on this job. SQLite has no FOR UPDATE: the no-op UPDATE is the
    # transaction's first write and takes the database's write lock, so the read below sees any committed twin.
    session.execute(select(Job.id).where(Job.id == job.id).with_for_update())
    session.execute(update(Job).where(Job.id == job.id).values(status=Job.status))
    existing = session.scalars(
        select(JobTask)
        .where(JobTask.job_id == job.id, JobTask.kind == "export", JobTask.status.in_((*UNFINISHED, "succeeded")))
        .order_by(JobTask.created_at.desc())
    )
    for task in existing:
        if _export_params(task) == params:
            session.commit()
            return task, False
    # Every kind counts alike against the quota: the archive lands under the job's folder.
    model = job.config.get("model", job.model)
    reserve = model_bytes(settings, model)
    check_quota(settings, session, job.tenant_id, reserve, "this export", "kind", checkpoint_state_bytes)
    return create_task(session, dispatcher, job, "export", params), True


def _export_params(task: JobTask) -> dict:
    params = task.params or {}
    return {k: v for k, v in params.items() if k in ("kind", "quantization")} or {"kind": "merged"}


def _model_folder(settings: Settings, name: str) -> Path | None:
    """The folder of a job's base model when this host can see it (the API reads only its JSON files)."""
    model = find_base_model(settings, name)
    folder = model.folder if model is not None else Path(name).expanduser()
    return folder if folder is not None and folder.is_absolute() and (folder / "config.json").is_file() else None


def check_gguf_model(settings: Settings, job: Job) -> None:
    """400 `unsupported_model` now, before any work, for an architecture or tokenizer GGUF cannot carry. A model
    this host cannot see (a hub id in the allow-list) is checked by the worker before it merges anything."""
    name = (job.config or {}).get("model", job.model)
    folder = _model_folder(settings, name)
    if folder is None:
        return
    try:
        check_exportable(folder)
    except GGUFUnsupported as exc:
        raise APIError(400, f"{name}: {exc}", code="unsupported_model", param=exc.param) from exc
    except (OSError, ValueError, json.JSONDecodeError):
        return  # unreadable here: the worker, which loads it, says why


def request_generation(session: Session, dispatcher: Dispatcher, settings: Settings, job: Job, params: dict) -> JobTask:
    _require_succeeded(job, "trying it")
    if params["max_new_tokens"] > settings.generate_max_new_tokens:
        raise APIError(
            400,
            f"max_new_tokens {params['max_new_tokens']} is above this server's limit of "
            f"{settings.generate_max_new_tokens}.",
            code="invalid_value",
            param="max_new_tokens",
        )
    _check_room_for_a_prompt(settings, job, params["max_new_tokens"])
    check_quota(
        settings,
        session,
        job.tenant_id,
        len(json.dumps(params)),
        "this try-it request",
        "prompt",
        checkpoint_state_bytes,
    )

    def cap(session: Session) -> None:
        unfinished = count_locked(
            session,
            job.tenant_id,
            select(func.count())
            .select_from(JobTask)
            .where(JobTask.tenant_id == job.tenant_id, JobTask.kind == "generate", JobTask.status.in_(UNFINISHED)),
        )
        if unfinished > settings.generate_per_tenant:
            session.rollback()
            raise APIError(
                429,
                f"{unfinished - 1} try-it requests of yours are still running (at most "
                f"{settings.generate_per_tenant}); wait for one or cancel it.",
                code="too_many_generations",
            )

    return create_task(session, dispatcher, job, "generate", params, cap)


def _check_room_for_a_prompt(settings: Settings, job: Job, max_new_tokens: int) -> None:
    """The answer and the prompt share the model's context: the worker cuts a long prompt to what is left (from
    the left), so max_new_tokens must leave some. Known only once the model's facts are (a registered model)."""
    from api.services.models import base_models

    name = job.config.get("model", job.model)
    context = next((m.facts.context_length for m in base_models(settings) if m.name == name), None)
    if context is not None and max_new_tokens > context // 2:
        raise APIError(
            400,
            f"max_new_tokens {max_new_tokens} leaves too little of {name}'s context of {context} tokens for the "
            f"prompt; use at most {context // 2}.",
            code="invalid_value",
            param="max_new_tokens",
        )


def tenant_task(session: Session, tenant: Tenant, task_id: str, kind: str) -> JobTask:
    task = session.scalar(
        select(JobTask).where(JobTask.id == task_id, JobTask.tenant_id == tenant.id, JobTask.kind == kind)
    )
    if task is None:
        raise not_found("export" if kind == "export" else "generation", task_id, "id")
    return task


def job_tasks(session: Session, job: Job, kind: str) -> list[JobTask]:
    return list(
        session.scalars(
            select(JobTask)
            .where(JobTask.job_id == job.id, JobTask.kind == kind)
            .order_by(JobTask.created_at.desc(), JobTask.id.desc())
            .limit(100)
        )
    )


def cancel_task(session: Session, task: JobTask) -> JobTask:
    """A queued task is cancelled at once; a running one gets the flag the worker reads between tokens.

    Conditional UPDATEs, so a worker claiming the task at the same moment is never overwritten: either the claim
    (queued -> running) or the cancel (queued -> cancelled) matches, never both."""
    now = utcnow()
    session.execute(
        update(JobTask)
        .where(JobTask.id == task.id, JobTask.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now)
    )
    session.execute(
        update(JobTask).where(JobTask.id == task.id, JobTask.status == "running").values(cancel_requested=True)
    )
    session.commit()
    session.refresh(task)
    return task

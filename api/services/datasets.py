"""Datasets (the OpenAI API's files): upload with full validation, and deletion."""

from __future__ import annotations

import os

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api import previews, transfers
from api.costs import checkpoint_state_bytes
from api.errors import APIError
from api.ids import new_dataset_id
from api.models import ACTIVE_STATUSES, Dataset, Job
from api.settings import Settings
from api.storage import check_quota
from api.uploads import ReceivedFile, receive_file

PURPOSES = ("fine-tune",)


async def upload_dataset(request: Request, session: Session, tenant_id: int, settings: Settings) -> Dataset:
    """Stream the multipart body to a temp file, validate it in full, store it. Nothing is kept on failure.

    Raises APIError 422 `invalid_dataset` (with `problems`, one per line) when the file does not validate.
    """
    # Authenticated (the route's dependencies ran): give the connection back before the body, which a slow
    # client may take minutes to send. The row is committed at the end in a short transaction of its own.
    session.close()
    slot = transfers.acquire(request, "upload")
    try:
        received = await receive_file(request, settings)
    finally:
        slot.release()
    try:
        purpose = received.fields.get("purpose", "fine-tune") or "fine-tune"
        if purpose not in PURPOSES:
            raise APIError(
                400,
                f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}.",
                code="invalid_value",
                param="purpose",
            )
        return await run_in_threadpool(store_dataset, session, tenant_id, settings, received, purpose)
    finally:
        if received.path.exists():
            received.path.unlink()  # failed validation or storage: nothing left behind


def store_dataset(
    session: Session, tenant_id: int, settings: Settings, received: ReceivedFile, purpose: str
) -> Dataset:
    from uds.formats import validate_file

    report = validate_file(str(received.path), min_examples=settings.min_examples, max_problems=settings.max_problems)
    if not report.ok:
        problems = [{"line": p.line, "reason": p.reason} for p in report.problems]
        first = problems[0] if problems else {"line": 0, "reason": "invalid"}
        where = f"line {first['line']}" if first["line"] else "file"
        more = f" ({len(problems)} problems listed in 'problems')" if len(problems) > 1 else ""
        raise APIError(
            422,
            f"Invalid dataset {received.filename!r}: {where}: {first['reason']}{more}",
            code="invalid_dataset",
            param="file",
            problems=problems,
        )
    check_quota(settings, session, tenant_id, received.bytes, "this upload", "file", checkpoint_state_bytes)
    dataset_id = new_dataset_id()
    relative = f"datasets/{dataset_id}.jsonl"
    final = settings.resolve(relative)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(received.path, final)  # same filesystem (tmp_dir is under data_dir): atomic
    try:
        previews.write_index(final)  # row offsets, so a preview reads only the rows it shows
        dataset = Dataset(
            id=dataset_id,
            tenant_id=tenant_id,
            filename=received.filename,
            purpose=purpose,
            format=report.format,
            bytes=received.bytes,
            sha256=received.sha256,
            n_examples=report.n_examples,
            status="processed",
            storage_path=relative,
        )
        session.add(dataset)
        session.commit()
    except BaseException:
        final.unlink(missing_ok=True)
        previews.remove_index(final)
        raise
    return dataset


def delete_dataset(session: Session, settings: Settings, dataset: Dataset) -> None:
    """Refused (400 `dataset_in_use`) while a job that has not finished uses the dataset."""
    # Lock the row so a concurrent job creation (which locks it too) cannot start using it mid-delete.
    session.execute(select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
    # Delete first, then look for users, inside the same write transaction: SQLite has no FOR UPDATE and starts
    # the transaction (its write lock) only at the first write, so a check made before it could miss a job
    # created in between. create_job re-checks the dataset after its own first write, for the same reason.
    path = settings.resolve(dataset.storage_path)
    session.delete(dataset)
    session.flush()
    user = session.scalar(
        select(Job.id)
        .where(
            Job.tenant_id == dataset.tenant_id,
            Job.status.in_(ACTIVE_STATUSES),
            or_(Job.dataset_id == dataset.id, Job.eval_dataset_id == dataset.id),
        )
        .limit(1)
    )
    if user is not None:
        session.rollback()
        raise APIError(
            400,
            f"Dataset {dataset.id} is used by job {user}, which has not finished; cancel it or wait.",
            code="dataset_in_use",
            param="id",
        )
    session.commit()
    path.unlink(missing_ok=True)
    previews.remove_index(path)

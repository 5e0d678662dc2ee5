"""/api/v1/datasets: upload (streamed, size-limited, fully validated), list, get, delete, row previews."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, select

from api import previews
from api.deps import CurrentTenant, DatasetDep, SessionDep, SettingsDep
from api.errors import APIError
from api.ids import new_dataset_id
from api.models import ACTIVE_STATUSES, Dataset, Job
from api.pagination import AfterParam, LimitParam, newest_first
from api.schemas import DatasetDeleted, DatasetPublic, DatasetRow, DatasetRows, ListPage, dataset_public
from api.uploads import receive_file

router = APIRouter(prefix="/datasets", tags=["datasets"])

PURPOSES = ("fine-tune",)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "JSONL: chat, Alpaca or prompt/completion"},
                "purpose": {"type": "string", "default": "fine-tune", "enum": list(PURPOSES)},
            },
        }}},
    }
}


@router.post("", status_code=201, response_model=DatasetPublic, openapi_extra=UPLOAD_BODY,
             responses={413: {"description": "Over UDS_MAX_UPLOAD_BYTES"}, 422: {"description": "Invalid dataset"}})
async def upload_dataset(request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    # Auth has already run (dependencies resolve before the body is read), so no bytes are stored for strangers.
    received = await receive_file(request, settings.tmp_dir, settings.max_upload_bytes)
    try:
        purpose = received.fields.get("purpose", "fine-tune") or "fine-tune"
        if purpose not in PURPOSES:
            raise APIError(400, f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}.",
                           code="invalid_value", param="purpose")
        return await run_in_threadpool(_store, session, tenant.id, settings, received, purpose)
    finally:
        if received.path.exists():
            received.path.unlink()  # failed validation or storage: nothing left behind


def _store(session, tenant_id, settings, received, purpose) -> DatasetPublic:
    from uds.formats import validate_file

    report = validate_file(str(received.path), min_examples=settings.min_examples, max_problems=settings.max_problems)
    if not report.ok:
        problems = [{"line": p.line, "reason": p.reason} for p in report.problems]
        first = problems[0] if problems else {"line": 0, "reason": "invalid"}
        where = f"line {first['line']}" if first["line"] else "file"
        more = f" ({len(problems)} problems listed in 'problems')" if len(problems) > 1 else ""
        raise APIError(422, f"Invalid dataset {received.filename!r}: {where}: {first['reason']}{more}",
                       code="invalid_dataset", param="file", problems=problems)
    dataset_id = new_dataset_id()
    relative = f"datasets/{dataset_id}.jsonl"
    final = settings.resolve(relative)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(received.path, final)  # same filesystem (tmp_dir is under data_dir): atomic
    try:
        dataset = Dataset(id=dataset_id, tenant_id=tenant_id, filename=received.filename, purpose=purpose,
                          format=report.format, bytes=received.bytes, sha256=received.sha256,
                          n_examples=report.n_examples, status="processed", storage_path=relative)
        session.add(dataset)
        session.commit()
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return dataset_public(dataset)


@router.get("", response_model=ListPage[DatasetPublic])
def list_datasets(session: SessionDep, tenant: CurrentTenant, limit: LimitParam = 20, after: AfterParam = None):
    stmt = select(Dataset).where(Dataset.tenant_id == tenant.id)
    rows, has_more = newest_first(session, Dataset, stmt, after, limit, tenant.id)
    data = [dataset_public(d) for d in rows]
    return ListPage[DatasetPublic](data=data, has_more=has_more, first_id=data[0].id if data else None,
                                   last_id=data[-1].id if data else None)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset: DatasetDep):
    return dataset_public(dataset)


@router.delete("/{dataset_id}", response_model=DatasetDeleted)
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep):
    # Lock the row so a concurrent POST /jobs (which locks it too) cannot start using it mid-delete.
    session.execute(select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
    user = session.scalar(select(Job.id).where(
        Job.tenant_id == dataset.tenant_id, Job.status.in_(ACTIVE_STATUSES),
        or_(Job.dataset_id == dataset.id, Job.eval_dataset_id == dataset.id)).limit(1))
    if user is not None:
        raise APIError(400, f"Dataset {dataset.id} is used by job {user}, which has not finished; cancel it or wait.",
                       code="dataset_in_use", param="id")
    path = settings.resolve(dataset.storage_path)
    session.delete(dataset)
    session.commit()
    path.unlink(missing_ok=True)
    previews.forget(dataset.id)
    return DatasetDeleted(id=dataset.id)


@router.get("/{dataset_id}/rows", response_model=DatasetRows)
def dataset_rows(dataset: DatasetDep, settings: SettingsDep,
                 offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 20):
    examples = previews.examples_for(settings, dataset) or []
    page = examples[offset:offset + limit]
    data = [DatasetRow(row=e.row, line=e.line, preview=previews.row_preview(examples, e.row) or "",
                       messages=e.messages) for e in page]
    return DatasetRows(data=data, has_more=offset + limit < len(examples), total=len(examples))

"""/v1/files: the datasets (purpose `fine-tune`; the same rows as /api/v1/datasets) and the jobs' result files
(purpose `fine-tune-results`), as OpenAI file objects."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api import transfers
from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import APIError, invalid_cursor, not_found
from api.limits import RateLimited
from api.models import Dataset, ResultFile
from api.openai import results
from api.openai.errors import openai_errors
from api.openai.mapping import unix
from api.openai.schemas import CursorList, FileDeleted, FileObject
from api.query import KNOWN_QUERY
from api.routes.datasets import UPLOAD_BODY
from api.services import datasets as dataset_service

router = APIRouter(prefix="/files", tags=["openai: files"])

FileId = Annotated[str, Path(max_length=64)]


def file_object(row: Dataset | ResultFile) -> FileObject:
    if isinstance(row, Dataset):
        kind: dict[str, Any] = {
            "purpose": row.purpose,
            "status": "processed" if row.status == "processed" else "error",
            "format": row.format,
            "n_examples": row.n_examples,
            "sha256": row.sha256,
        }
    else:
        kind = {"purpose": results.PURPOSE, "status": "processed", "fine_tuning_job_id": row.job_id, "kind": row.kind}
    return FileObject(id=row.id, bytes=row.bytes, created_at=unix(row.created_at), filename=row.filename, **kind)


def lookup(session: Session, tenant_id: int, file_id: str) -> Dataset | ResultFile:
    dataset = session.scalar(select(Dataset).where(Dataset.id == file_id, Dataset.tenant_id == tenant_id))
    if dataset is not None:
        return dataset
    result = session.scalar(select(ResultFile).where(ResultFile.id == file_id, ResultFile.tenant_id == tenant_id))
    if result is not None:
        return result
    raise not_found("file", file_id)


@router.post("", response_model=FileObject, openapi_extra=UPLOAD_BODY, dependencies=[RateLimited])
async def create_file(request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    """Upload a training file (multipart `file`, `purpose=fine-tune`). It is validated in full first: an invalid
    file is refused with 400, the first problem's line number in the message and every problem in `problems`."""
    with openai_errors():
        dataset = await dataset_service.upload_dataset(request, session, tenant.id, settings)
    return file_object(dataset)


@router.get("", response_model=CursorList[FileObject], dependencies=[KNOWN_QUERY])
def list_files(
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: Annotated[str | None, Query(max_length=64)] = None,
):
    """Training files and result files together, by creation time (`order`), `after` = the last id seen."""
    sources = [m for m, p in ((Dataset, "fine-tune"), (ResultFile, results.PURPOSE)) if purpose in (None, p)]
    if ResultFile in sources:
        results.record_all(session, settings, tenant.id)
    descending = order == "desc"
    cursor = None
    if after is not None:
        try:
            row = lookup(session, tenant.id, after)
        except APIError:
            raise invalid_cursor(f"no file {after!r} to continue from.") from None
        cursor = (row.created_at, row.id)
    rows: list[Dataset | ResultFile] = []
    for model in sources:
        stmt = select(model).where(model.tenant_id == tenant.id)
        if cursor is not None:
            at, key = cursor
            if descending:
                stmt = stmt.where(or_(model.created_at < at, and_(model.created_at == at, model.id < key)))
            else:
                stmt = stmt.where(or_(model.created_at > at, and_(model.created_at == at, model.id > key)))
        columns = (model.created_at.desc(), model.id.desc()) if descending else (model.created_at, model.id)
        rows += session.scalars(stmt.order_by(*columns).limit(limit + 1))
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=descending)
    data = [file_object(r) for r in rows[:limit]]
    return CursorList[FileObject].page(data, has_more=len(rows) > limit)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: FileId, session: SessionDep, tenant: CurrentTenant):
    return file_object(lookup(session, tenant.id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: FileId, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    row = lookup(session, tenant.id, file_id)
    if isinstance(row, ResultFile):
        raise APIError(
            400,
            f"{file_id} is a result file of job {row.job_id}; result files stay with their job.",
            code="file_not_deletable",
            param="file_id",
        )
    dataset_service.delete_dataset(session, settings, row)
    return FileDeleted(id=file_id)


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}},
)
def file_content(file_id: FileId, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    row = lookup(session, tenant.id, file_id)
    path = settings.served_file(row.storage_path)
    if path is None:
        raise APIError(
            404, f"The content of {file_id} is missing from the artifact store.", code="file_not_found", param="file_id"
        )
    media_type = {"step_metrics": "text/csv", "adapter": "application/gzip"}.get(
        getattr(row, "kind", ""), "application/octet-stream"
    )
    # Streamed in chunks (never loaded into memory), with no database connection held, under the download caps.
    return transfers.file_response(request, settings, path, media_type=media_type, filename=row.filename)

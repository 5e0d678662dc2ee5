"""/api/v1/datasets: upload (streamed, size-limited, fully validated), list, get, delete, row previews."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from api import previews
from api.deps import CurrentTenant, DatasetDep, SessionDep, SettingsDep
from api.limits import RateLimited
from api.models import Dataset
from api.pagination import AfterParam, LimitParam, newest_first
from api.query import KNOWN_QUERY
from api.schemas import DatasetDeleted, DatasetPublic, DatasetRow, DatasetRows, ListPage, dataset_public
from api.services import datasets as dataset_service
from api.services.datasets import PURPOSES

router = APIRouter(prefix="/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSONL: chat, Alpaca or prompt/completion",
                        },
                        "purpose": {"type": "string", "default": "fine-tune", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    openapi_extra=UPLOAD_BODY,
    dependencies=[RateLimited],
    responses={413: {"description": "Over UDS_MAX_UPLOAD_BYTES"}, 422: {"description": "Invalid dataset"}},
)
async def upload_dataset(request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    # Auth has already run (dependencies resolve before the body is read), so no bytes are stored for strangers.
    return dataset_public(await dataset_service.upload_dataset(request, session, tenant.id, settings))


@router.get("", response_model=ListPage[DatasetPublic], dependencies=[KNOWN_QUERY])
def list_datasets(session: SessionDep, tenant: CurrentTenant, limit: LimitParam = 20, after: AfterParam = None):
    stmt = select(Dataset).where(Dataset.tenant_id == tenant.id)
    rows, has_more = newest_first(session, Dataset, stmt, after, limit, tenant.id)
    data = [dataset_public(d) for d in rows]
    return ListPage[DatasetPublic].page(data, has_more=has_more)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset: DatasetDep):
    return dataset_public(dataset)


@router.delete("/{dataset_id}", response_model=DatasetDeleted)
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep):
    dataset_service.delete_dataset(session, settings, dataset)
    return DatasetDeleted(id=dataset.id)


@router.get("/{dataset_id}/rows", response_model=DatasetRows, dependencies=[KNOWN_QUERY])
def dataset_rows(
    dataset: DatasetDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    examples = previews.examples_for(settings, dataset)
    if examples is None:
        return DatasetRows(data=[], has_more=False, total=0)
    from uds.formats import example_preview

    data = [
        DatasetRow(row=e.row, line=e.line, preview=example_preview(e), messages=e.messages)
        for e in examples.page(offset, limit)
    ]
    return DatasetRows(data=data, has_more=offset + limit < len(examples), total=len(examples))

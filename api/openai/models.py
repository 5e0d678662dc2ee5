"""/v1/models: the base models jobs may use and the tenant's finished fine-tunes (the native list, reshaped)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import APIError
from api.openai.mapping import unix
from api.openai.schemas import CursorList, ModelObject
from api.query import KNOWN_QUERY
from api.routes import models as native_models

router = APIRouter(prefix="/models", tags=["openai: models"])


def all_models(session, tenant, settings) -> list[ModelObject]:
    # Base models have no creation time of their own here; 0 says "unknown" and keeps `created` an integer.
    return [
        ModelObject(id=m.id, created=unix(m.created_at) or 0, owned_by=m.owned_by)
        for m in native_models.list_models(session, tenant, settings).data
    ]


@router.get("", response_model=CursorList[ModelObject], dependencies=[KNOWN_QUERY])
def list_models(session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    data = all_models(session, tenant, settings)
    return CursorList[ModelObject].page(data, has_more=False)


@router.get("/{model_id:path}", response_model=ModelObject)
def retrieve_model(
    model_id: Annotated[str, Path(max_length=600)], session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
):
    for model in all_models(session, tenant, settings):
        if model.id == model_id:
            return model
    raise APIError(
        404,
        f"The model {model_id!r} does not exist on this server (GET /v1/models lists them).",
        code="model_not_found",
        param="model",
    )

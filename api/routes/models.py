"""/api/v1/models: the base models jobs may use (the built-in ones, registered models, the allow-list) with the facts
a user chooses by and where each came from, and the tenant's finished fine-tunes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.models import Job
from api.query import KNOWN_QUERY
from api.schemas import ListPage, ModelPublic
from api.services.models import base_models

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ListPage[ModelPublic], dependencies=[KNOWN_QUERY])
def list_models(session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    data = [
        ModelPublic(
            id=m.name,
            kind="base",
            owned_by="system",
            source=m.source,
            revision=m.revision,
            quantization=m.quantization,
            original_file=m.original_file,
            architecture=m.facts.architecture,
            parameters=m.facts.parameters,
            vocab_size=m.facts.vocab_size,
            context_length=m.facts.context_length,
            tied_embeddings=m.facts.tied_embeddings,
            linear_head=m.facts.linear_head,
            head_note=m.facts.head_note,
            linear_modules=m.facts.linear_modules,
        )
        for m in base_models(settings)
    ]
    jobs = session.scalars(
        select(Job)
        .where(Job.tenant_id == tenant.id, Job.status == "succeeded", Job.fine_tuned_model.is_not(None))
        .order_by(Job.finished_at.desc(), Job.id.desc())
    )
    data += [
        ModelPublic(
            id=j.fine_tuned_model,
            kind="fine-tune",
            owned_by=tenant.name,
            base_model=j.model,
            job_id=j.id,
            created_at=j.finished_at,
        )
        for j in jobs
    ]
    return ListPage[ModelPublic].page(data, has_more=False)

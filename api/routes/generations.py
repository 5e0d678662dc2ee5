"""Try a succeeded job: a prompt answered by the base model with the job's adapter and without it, on a worker.

POST /api/v1/jobs/{job_id}/generate        {"prompt" | "messages", "max_new_tokens", "temperature", "seed"}  202
GET  /api/v1/generations/{generation_id}   queued | running | succeeded (both answers) | failed | cancelled
POST /api/v1/generations/{generation_id}/cancel
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from api.deps import CurrentTenant, JobDep, SessionDep, SettingsDep
from api.limits import RateLimited
from api.schemas.tasks import GenerateCreate, GenerationPublic, generation_public
from api.services import job_tasks

router = APIRouter(tags=["try-it"])
GenerationId = Annotated[str, Path(max_length=64)]


@router.post("/jobs/{job_id}/generate", status_code=202, response_model=GenerationPublic, dependencies=[RateLimited])
def generate(job: JobDep, body: GenerateCreate, request: Request, session: SessionDep, settings: SettingsDep):
    params = {
        "messages": body.chat(),
        "max_new_tokens": body.max_new_tokens,
        "temperature": body.temperature,
        "seed": body.seed,
    }
    task = job_tasks.request_generation(session, request.app.state.dispatcher, settings, job, params)
    return generation_public(task)


@router.get("/generations/{generation_id}", response_model=GenerationPublic)
def get_generation(generation_id: GenerationId, session: SessionDep, tenant: CurrentTenant):
    return generation_public(job_tasks.tenant_task(session, tenant, generation_id, "generate"))


@router.post("/generations/{generation_id}/cancel", response_model=GenerationPublic)
def cancel_generation(generation_id: GenerationId, session: SessionDep, tenant: CurrentTenant):
    task = job_tasks.tenant_task(session, tenant, generation_id, "generate")
    return generation_public(job_tasks.cancel_task(session, task))

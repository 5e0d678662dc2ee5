"""Merged exports of a succeeded job: requested on the job, built by a worker, downloaded as one archive.

POST /api/v1/jobs/{job_id}/exports   {"kind": "merged"}   202 (200 when that export already exists)
GET  /api/v1/jobs/{job_id}/exports                         the job's exports, newest first
GET  /api/v1/exports/{export_id}                           status, bytes, sha256
GET  /api/v1/exports/{export_id}/content                   the .tar.gz (members under merged/)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse

from api import transfers
from api.deps import CurrentTenant, JobDep, SessionDep, SettingsDep
from api.errors import APIError
from api.limits import RateLimited
from api.query import KNOWN_QUERY
from api.schemas import ListPage
from api.schemas.tasks import ExportCreate, ExportPublic, export_public
from api.services import job_tasks

router = APIRouter(tags=["exports"])
ExportId = Annotated[str, Path(max_length=64)]


@router.post("/jobs/{job_id}/exports", status_code=202, response_model=ExportPublic, dependencies=[RateLimited])
def create_export(
    job: JobDep, request: Request, response: Response, session: SessionDep, body: ExportCreate | None = None
):
    export, created = job_tasks.request_export(
        session, request.app.state.dispatcher, job, (body or ExportCreate()).kind
    )
    if not created:
        response.status_code = 200
    return export_public(export)


@router.get("/jobs/{job_id}/exports", response_model=ListPage[ExportPublic], dependencies=[KNOWN_QUERY])
def list_exports(job: JobDep, session: SessionDep):
    return ListPage[ExportPublic].page(
        [export_public(t) for t in job_tasks.job_tasks(session, job, "export")], has_more=False
    )


@router.get("/exports/{export_id}", response_model=ExportPublic)
def get_export(export_id: ExportId, session: SessionDep, tenant: CurrentTenant):
    return export_public(job_tasks.tenant_task(session, tenant, export_id, "export"))


@router.get(
    "/exports/{export_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}, "description": "tar.gz of the merged model"}},
)
def export_content(
    export_id: ExportId, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
):
    """The merged model as .tar.gz; its sha256 is in `X-Checksum-SHA256` and in the export."""
    export = job_tasks.tenant_task(session, tenant, export_id, "export")
    path = settings.served_file(export.path) if export.status == "succeeded" else None
    if path is None:
        raise APIError(
            404, f"Export {export.id} has no archive: it is {export.status}.", code="export_not_ready", param="id"
        )
    return transfers.file_response(
        request,
        settings,
        path,
        media_type="application/gzip",
        filename=f"{export.job_id}-merged.tar.gz",
        headers={"X-Checksum-SHA256": export.sha256 or ""},
    )

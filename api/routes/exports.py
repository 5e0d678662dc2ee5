"""Exports of a succeeded job: requested on the job, built by a worker, downloaded as one archive.

POST /api/v1/jobs/{job_id}/exports   {"kind": "merged"}                          202 (200 when it already exists)
                                     {"kind": "gguf", "quantization": "q8_0"}   (f16 when not given)
GET  /api/v1/jobs/{job_id}/exports                         the job's exports, newest first
GET  /api/v1/exports/{export_id}                           status, bytes, sha256
POST /api/v1/exports/{export_id}/cancel                    queued: cancelled at once; running: stops, leaves no file
GET  /api/v1/exports/{export_id}/content                   merged: .tar.gz (members under merged/);
                                                           gguf: .tar (gguf/<job>-<quantization>.gguf, gguf/Modelfile)
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
    job: JobDep,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    body: ExportCreate | None = None,
):
    export, created = job_tasks.request_export(
        session, request.app.state.dispatcher, settings, job, (body or ExportCreate()).params()
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


@router.post("/exports/{export_id}/cancel", response_model=ExportPublic)
def cancel_export(export_id: ExportId, session: SessionDep, tenant: CurrentTenant):
    """A queued export is cancelled at once; a running GGUF export stops before its next tensor (a merged one when
    it has been written), and its partial files are removed."""
    return export_public(job_tasks.cancel_task(session, job_tasks.tenant_task(session, tenant, export_id, "export")))


@router.get(
    "/exports/{export_id}/content",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/gzip": {}, "application/x-tar": {}},
            "description": "merged: tar.gz of the merged model; gguf: tar of the .gguf file and its Modelfile",
        }
    },
)
def export_content(
    export_id: ExportId, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
):
    """The export's archive; its sha256 is in `X-Checksum-SHA256` and in the export."""
    export = job_tasks.tenant_task(session, tenant, export_id, "export")
    path = settings.served_file(export.path) if export.status == "succeeded" else None
    if path is None:
        raise APIError(
            404, f"Export {export.id} has no archive: it is {export.status}.", code="export_not_ready", param="id"
        )
    gguf = export.params.get("kind") == "gguf"
    return transfers.file_response(
        request,
        settings,
        path,
        media_type="application/x-tar" if gguf else "application/gzip",
        filename=f"{export.job_id}-gguf-{export.params.get('quantization')}.tar"
        if gguf
        else f"{export.job_id}-merged.tar.gz",
        headers={"X-Checksum-SHA256": export.sha256 or ""},
    )

"""Liveness (/healthz), readiness (/readyz: database and broker reachable) and /api/v1/info."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SettingsDep, auth_required_for
from api.schemas import Info
from api.services.models import base_models

router = APIRouter(tags=["health"])
info_router = APIRouter(tags=["info"])


def package_version() -> str:
    try:
        return version("uds-finetune")
    except PackageNotFoundError:
        return "0.0.0"


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request):
    checks: dict[str, str] = {}

    def database():
        with request.app.state.sessionmaker() as session:
            session.execute(text("SELECT 1"))

    for name, check in (("database", database), ("broker", request.app.state.dispatcher.ping)):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks, "mode": request.app.state.dispatcher.mode}
    if not ready:
        unavailable = ", ".join(k for k, v in checks.items() if v != "ok")
        body["error"] = {
            "message": f"Not ready: {unavailable} unreachable.",
            "type": "service_unavailable",
            "param": None,
            "code": "not_ready",
        }
    return JSONResponse(body, status_code=200 if ready else 503)


@info_router.get("/info", response_model=Info)
def info(request: Request, settings: SettingsDep):
    return Info(
        version=package_version(),
        auth_required=auth_required_for(settings, request),
        mode="embedded" if settings.embedded else "distributed",
        models=[m.name for m in base_models(settings)],
        max_upload_bytes=settings.max_upload_bytes,
        max_comparison_jobs=settings.max_comparison_jobs,
        max_active_jobs=settings.max_active_jobs,
    )

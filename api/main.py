"""The FastAPI application: `create_app(settings)`; `app` is the instance for `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool

from api import dashboard, errors, ids, limits, monitoring, storage
from api import openai as openai_api
from api.auth import add_key, get_or_create_tenant
from api.conditional import RepresentationCache
from api.db import PoolSize, migrate, session_factory
from api.dispatch import make_dispatcher
from api.origin import LoopbackGuardMiddleware
from api.routes import comparisons, datasets, exports, generations, health, jobs, models, webhooks
from api.settings import Settings, bootstrap_key_problem, get_settings
from api.transfers import TransferLimits
from api.validation import URLValidationMiddleware

log = logging.getLogger(__name__)


def prepare(settings: Settings) -> int:
    """Schema to head, folders, the local tenant and the bootstrap key. Returns the local tenant's id."""
    problem = bootstrap_key_problem(settings)  # before anything is written: a refused start leaves no trace
    if problem:
        raise RuntimeError(problem)
    for folder in (settings.data_dir, settings.datasets_dir, settings.jobs_dir, settings.tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    ids.use_id_key(ids.load_id_key(settings.data_dir / "secrets" / "id.key"))  # opaque event and checkpoint ids
    storage.remove_abandoned_uploads(settings)
    if settings.migrate_on_start:
        migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url, "api")() as session:
        storage.remove_abandoned_checkpoint_writes(settings, session)
        local = get_or_create_tenant(session, settings.local_tenant)
        if settings.bootstrap_api_key is not None:
            add_key(session, settings.bootstrap_tenant, settings.bootstrap_api_key.get_secret_value(), name="bootstrap")
        session.commit()
        return local.id


RETENTION_SWEEP_SECONDS = 600


async def retention_sweeps(app: FastAPI) -> None:
    """UDS_CHECKPOINT_RETENTION for succeeded jobs, at start and every RETENTION_SWEEP_SECONDS (api/storage.py)."""

    def sweep() -> None:
        with app.state.sessionmaker() as session:
            pruned = storage.prune_finished_checkpoints(app.state.settings, session)
        if pruned:
            log.info("retention: deleted the checkpoints of %d succeeded jobs", pruned)

    while True:
        try:
            await run_in_threadpool(sweep)
        except Exception:
            log.exception("retention sweep failed; retrying at the next one")
        await asyncio.sleep(RETENTION_SWEEP_SECONDS)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.local_tenant_id = await run_in_threadpool(prepare, settings)
        sweeper = asyncio.create_task(retention_sweeps(app))
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(
        title="UDS fine-tuning service",
        version=health.package_version(),
        description="Fine-tune LoRA adapters on the fraction of your data that matters (UDS online batch selection).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # The API's own pool: the embedded worker's training writer uses another, so neither can starve the other.
    app.state.sessionmaker = session_factory(
        settings.sqlalchemy_url,
        "api",
        PoolSize(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_seconds),
    )
    app.state.dispatcher = make_dispatcher(settings)
    app.state.create_buckets = limits.make_buckets(settings)
    app.state.transfers = TransferLimits(settings)
    errors.install(app)
    # Uploads stream to disk under their own limit (api/uploads.py); every other body is small JSON.
    app.add_middleware(
        limits.BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        idle_timeout=settings.client_idle_timeout_seconds,
        exempt={("POST", "/api/v1/datasets"), ("POST", "/v1/files")},
    )
    app.add_middleware(RepresentationCache)  # a polled answer serves the polls right after it (api/conditional.py)
    app.add_middleware(URLValidationMiddleware)  # a NUL or a 5,000-character path never reaches a route
    if not settings.auth_required:
        app.add_middleware(LoopbackGuardMiddleware)  # outermost: nothing runs for a rebound Host or a CSRF

    v1 = APIRouter(prefix="/api/v1")
    for module in (datasets, jobs, comparisons, models, exports, generations, webhooks):
        v1.include_router(module.router)
    v1.include_router(health.info_router)
    app.include_router(v1)
    app.include_router(openai_api.router)  # /v1: the OpenAI-compatible fine-tuning API (docs/OPENAI.md)
    app.include_router(health.router)
    app.include_router(dashboard.router)  # the web UI at /; it only calls the API above
    monitoring.install(app)  # GET /metrics; its request counter wraps even the loopback guard (it only counts)
    return app


def __getattr__(name: str):
    # `uvicorn api.main:app` gets an app built from the environment; importing this module builds nothing.
    if name == "app":
        return create_app()
    raise AttributeError(name)

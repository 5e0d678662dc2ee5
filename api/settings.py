"""One settings class for the API, the worker and the CLI, read from the environment (prefix `UDS_`).

The defaults are the embedded mode: SQLite file and artifacts under DATA_DIR, no broker (an in-process worker
thread runs the jobs), bound to 127.0.0.1. The distributed mode is the same code with UDS_DATABASE_URL
(Postgres) and UDS_BROKER_URL (Redis) set.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from uds.smollm2 import REAL_MODEL  # torch-free at import, like uds.tiny (tests/api/test_no_torch.py holds it so)
from uds.tiny import TINY_MODEL

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# A bootstrap key guarding a server other hosts can reach must be a real secret: api.auth.generate_key makes 47
# characters; 32 leaves room for keys made otherwise while refusing "uds-test" and the like.
MIN_EXPOSED_KEY_CHARS = 32
# .env.example ships `uds-change-me-...`; a copied .env that kept it would otherwise be a published password.
PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/uds (~/.local/share/uds): one place per user, whatever the working directory is."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "uds"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UDS_", extra="ignore", validate_default=True)

    # Where state lives.
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Datasets, job outputs, models and the SQLite file."
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/uds.db.")
    broker_url: str | None = Field(default=None, description="Celery broker (redis://...); unset = in-process worker.")
    queue: str = Field(default="gpu", description="Celery queue the API sends jobs to and workers consume.")

    # Network and auth.
    host: str = "127.0.0.1"
    port: int = 8000
    require_auth: Literal["auto"] | bool = Field(
        default="auto", description="auto: keys required unless the server is bound to a loopback address."
    )
    bootstrap_api_key: SecretStr | None = Field(
        default=None, description="A key (uds-...) created at start for bootstrap_tenant."
    )
    bootstrap_tenant: str = "default"
    local_tenant: str = Field(default="local", description="Tenant of key-less requests when auth is not required.")

    # Monitoring (api/monitoring.py, README "Monitoring").
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for GET /metrics (Prometheus). Unset: /metrics answers only a key-less server's "
        "loopback clients.",
    )
    metrics_tenant_labels: bool = Field(
        default=False, description="Label /metrics job figures with the tenant's name (one series per tenant)."
    )

    # What users may submit.
    allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated model names or local folders; uds-tiny and smollm2-135m-instruct are always allowed.",
    )
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    min_examples: int = Field(default=10, ge=1)
    max_problems: int = Field(default=100, ge=1, description="Validation stops listing problems after this many.")

    # Limits (api/limits.py).
    create_rate_per_minute: float = Field(
        default=60, ge=0, description="Jobs + uploads per API key per minute; 0 = off."
    )
    create_burst: int = Field(default=30, ge=1, description="Jobs + uploads an API key may create at once.")
    max_active_jobs: int = Field(default=32, ge=0, description="Unfinished jobs per tenant; 0 = no cap.")
    max_comparison_jobs: int = Field(
        default=60, ge=1, description="Jobs one comparison may create (POST /comparisons)."
    )
    max_request_bytes: int = Field(default=1024 * 1024, gt=0, description="Request bodies other than uploads.")
    max_form_fields: int = Field(default=8, ge=1, description="Form fields besides the file in one upload.")
    max_form_field_bytes: int = Field(default=1024, ge=1, description="Bytes of one upload form field.")

    # Slow or many clients (api/transfers.py). Counted per API process; a transfer holds no database connection.
    max_uploads_per_key: int = Field(default=4, ge=1, description="Uploads one API key may have in flight.")
    max_downloads_per_key: int = Field(default=8, ge=1, description="Downloads one API key may have in flight.")
    max_uploads: int = Field(default=64, ge=1, description="Uploads in flight in one API process, all keys.")
    max_downloads: int = Field(default=256, ge=1, description="Downloads in flight in one API process, all keys.")
    client_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A client that sends or reads nothing this long is cut off."
    )
    min_transfer_bytes_per_second: int = Field(
        default=1024, ge=0, description="After the idle timeout, slower uploads/downloads are cut off; 0 = off."
    )
    db_pool_size: int = Field(default=10, ge=1, description="The API's own database pool (the worker has another).")
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, description="Wait for a pooled connection, then 503.")

    # What one job may cost (api/costs.py); refused at submit time with 400 naming the setting.
    max_selector_memory_bytes: int = Field(
        default=1024**3, gt=0, description="UDS memory buffer plus projection matrices of one job."
    )
    cost_vocab_size: int = Field(
        default=262_144, ge=1, description="Vocabulary assumed for the projection's cost (an upper bound)."
    )
    max_checkpoint_state_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="Selector state kept on disk by one job: buffer x keep_checkpoints."
    )
    max_checkpoints_per_job: int = Field(default=1000, ge=1, description="Checkpoints one job may write.")
    max_keep_checkpoints: int = Field(default=10, ge=1)
    max_job_steps: int = Field(default=200_000, ge=1, le=2**31 - 1, description="Optimizer steps of one job.")
    max_step_candidates: int = Field(default=4096, ge=1, description="Candidates scored in one step.")
    max_job_candidates: int = Field(
        default=20_000_000, ge=1, description="Candidates one job scores in all (each is a selections row)."
    )
    max_seq_len: int = Field(default=8192, ge=1, description="Largest max_seq_len a job may ask for.")
    tenant_storage_bytes: int = Field(
        default=0, ge=0, description="Per tenant: datasets + adapters + estimated checkpoint state; 0 = no quota."
    )
    checkpoint_retention: Literal["final", "all"] = Field(
        default="final", description="final: a succeeded job's intermediate checkpoints are deleted; all: kept."
    )

    # Fair turns across tenants (worker/fairness.py, docs/API.md "Queueing and limits").
    max_job_seconds: float = Field(
        default=24 * 3600,
        ge=0,
        description="Wall time from a job's first start; then it fails with "
        "time_limit_exceeded (checkpoints kept). 0 = no limit.",
    )
    max_running_jobs_per_tenant: int = Field(
        default=4,
        ge=0,
        description="Distributed mode: jobs one tenant may run while another tenant's job is queued; 0 = no cap.",
    )

    # Try-it (POST /api/v1/jobs/{id}/generate): short generations run by a worker, bounded here.
    generate_max_new_tokens: int = Field(default=256, ge=1, description="Largest max_new_tokens of one try-it request.")
    generate_max_seconds: float = Field(default=60.0, gt=0, description="Each answer stops after this long.")
    generate_per_tenant: int = Field(default=2, ge=1, description="Try-it requests a tenant may have unfinished.")
    task_slots: int = Field(
        default=2,
        ge=1,
        description="Embedded server: short tasks (try-it, exports) run at once, at most one per tenant, so one "
        "tenant's long generation does not hold up another's.",
    )

    # Webhooks (api/webhooks_targets.py, worker/webhooks.py) and tracker integrations (worker/integrations.py).
    allow_private_targets: bool | None = Field(
        default=None,
        description="Webhook URLs and tracker URIs may name loopback, private or link-local addresses "
        "(and file: trackers). Unset: only on an embedded server bound to loopback (SSRF on a shared deployment).",
    )
    max_webhooks_per_tenant: int = Field(default=16, ge=1)
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts of one delivery before it is failed.")
    webhook_retry_base_seconds: float = Field(
        default=10.0, gt=0, description="Wait after the first failed attempt; doubled after each further one."
    )
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="One delivery attempt's HTTP timeout.")
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="How often a worker looks for due deliveries.")
    task_stale_after_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="An export or try-it task running this long (or whose worker on this host "
        "is gone) is re-queued once, then failed.",
    )

    # Worker behaviour.
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N for the jobs this worker runs.")
    worker_devices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Devices one worker process trains one job on: with UDS_DEVICE=cuda, that many GPUs per "
        "process (process i gets GPUs i*N .. i*N+N-1); on the CPU, that many gloo processes. A job asking for "
        "`devices` up to this runs on this worker.",
    )
    max_job_devices: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="The most devices a job may ask for; more is refused with 400. Default: UDS_WORKER_DEVICES "
        "(set it to what the largest worker of the deployment offers).",
    )
    checkpoint_every: int = Field(default=50, ge=1, description="Default for jobs that do not set checkpoint_every.")
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    stale_after_seconds: float = Field(
        default=120.0, gt=0, description="A running job whose heartbeat is older is re-queued."
    )
    metrics_flush_steps: int = Field(default=20, ge=1)
    metrics_flush_seconds: float = Field(default=2.0, gt=0)
    redispatch_after_seconds: float = Field(
        default=600.0, gt=0, description="A queued job not taken this long after its message was sent is sent again."
    )
    visibility_timeout_seconds: int = Field(default=24 * 3600, ge=60)
    embedded_worker: bool = Field(default=True, description="Run jobs in-process when no broker is configured.")
    embedded_poll_seconds: float = Field(default=1.0, gt=0)
    migrate_on_start: bool = True

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("require_auth", mode="before")
    @classmethod
    def _parse_auth(cls, value):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        return value

    @field_validator("broker_url", "database_url", "metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must be more than twice heartbeat_seconds, or live jobs look dead")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'uds.db'}"

    @property
    def models(self) -> list[str]:
        """The allow-list: the built-in models first and always, then UDS_ALLOWED_MODELS."""
        builtins = [TINY_MODEL, REAL_MODEL]
        return builtins + [m for m in self.allowed_models if m not in builtins]

    @property
    def auth_required(self) -> bool:
        if self.require_auth == "auto":
            return not is_loopback(self.host)
        return bool(self.require_auth)

    @property
    def job_devices_limit(self) -> int:
        return self.max_job_devices or self.worker_devices

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def private_targets_allowed(self) -> bool:
        if self.allow_private_targets is not None:
            return self.allow_private_targets
        return self.embedded and is_loopback(self.host)

    # Every path a job uses is derived here, so the API and a worker on another host agree given the same volume.
    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def resolve(self, relative: str) -> Path:
        """Stored paths are relative to data_dir, so the volume may be mounted anywhere. A stored path that is
        outside it (absolute elsewhere, or climbing out with '..') is refused: no row may name a file elsewhere."""
        root = Path(os.path.normpath(self.data_dir))
        path = Path(os.path.normpath(root / relative))  # an absolute `relative` replaces root: checked next
        if path != root and root not in path.parents:
            raise ValueError(f"stored path {relative!r} is not inside the data folder")
        return path

    def served_file(self, relative: str | None) -> Path | None:
        """The file to send for a download, or None if it is missing or, once symlinks are followed, outside
        the data folder (a link planted in the volume must not serve /etc/passwd)."""
        if not relative:
            return None
        try:
            path = self.resolve(relative)
            real = path.resolve(strict=True)
        except (ValueError, OSError):
            return None
        root = self.data_dir.resolve()
        if not real.is_relative_to(root) or not real.is_file():
            return None
        return real


def bootstrap_key_problem(settings: Settings) -> str | None:
    """Why UDS_BOOTSTRAP_API_KEY must not guard this server, or None. Only outside loopback: there the key is
    what stands between the network and every tenant's data."""
    if settings.bootstrap_api_key is None or is_loopback(settings.host):
        return None
    key = settings.bootstrap_api_key.get_secret_value()
    how = "generate one with: python -c \"import secrets; print('uds-' + secrets.token_urlsafe(32))\""
    if any(mark in key.lower() for mark in PLACEHOLDER_MARKS):
        return (
            f"UDS_BOOTSTRAP_API_KEY is the placeholder from .env.example; refusing to serve on {settings.host}; {how}"
        )
    if len(key) < MIN_EXPOSED_KEY_CHARS:
        return (
            f"UDS_BOOTSTRAP_API_KEY has {len(key)} characters; serving on {settings.host} needs at least "
            f"{MIN_EXPOSED_KEY_CHARS}; {how}"
        )
    return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()

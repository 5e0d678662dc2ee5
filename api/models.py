"""Database tables (SQLAlchemy 2 declarative). The DDL lives in migrations/; keep the two in step
(tests/api/test_migrations.py compares them).

Portable between SQLite (embedded) and Postgres (distributed): JSON becomes JSONB on Postgres, timestamps are
stored in UTC and always come back timezone-aware.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from uds.records import Phase

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
ACTIVE_STATUSES = ("validating_files", "queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC in Python. SQLite has no time zones, so it stores naive UTC; comparisons in SQL stay valid
    because every value is written the same way."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("name", name="uq_tenants_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, so a person can tell keys apart
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # file-<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64), default="fine-tune")
    format: Mapped[str | None] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    n_examples: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="processed")
    storage_path: Mapped[str] = mapped_column(String(1024))  # relative to Settings.data_dir
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # ftjob-<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(256))
    suffix: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the resolved TrainConfig, minus host paths
    # No foreign keys to datasets: deleting a dataset must not delete (or be blocked by) finished jobs.
    dataset_id: Mapped[str] = mapped_column(String(32))
    eval_dataset_id: Mapped[str | None] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Progress, written by the worker at each metrics flush.
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    examples_scored: Mapped[int] = mapped_column(BigInteger, default=0)
    examples_trained: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_trained: Mapped[int] = mapped_column(BigInteger, default=0)
    # Seconds spent scoring and selecting, and training on the picks: sums over the job's steps.
    time_scoring: Mapped[float | None] = mapped_column(Float)
    time_training: Mapped[float | None] = mapped_column(Float)
    # A succeeded job's measured speed, what estimates of later jobs are made from (uds/estimate.py): candidates
    # scored per second of scoring, tokens trained per second of training, and the device that ran it.
    scoring_rate: Mapped[float | None] = mapped_column(Float)
    training_rate: Mapped[float | None] = mapped_column(Float)
    device_kind: Mapped[str | None] = mapped_column(String(128))
    alpha_used: Mapped[float | None] = mapped_column(Float)
    latest_loss: Mapped[float | None] = mapped_column(Float)
    progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_param: Mapped[str | None] = mapped_column(String(128))

    # Ownership: the worker that claimed the job, its liveness, and where this attempt began (for the ETA).
    worker_id: Mapped[str | None] = mapped_column(String(256))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempt_start_step: Mapped[int] = mapped_column(Integer, default=0)
    # Distributed mode: when the job's message was last sent to the broker (NULL: a send failed, or never sent).
    # The recovery sweep re-sends a job still queued this long after (worker/recovery.py, redispatch_queued).
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # What a running job is doing (uds.records.Phase) since when, and its last evaluation's duration (for the ETA).
    phase: Mapped[Phase | None] = mapped_column(String(16))
    phase_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    eval_seconds: Mapped[float | None] = mapped_column(Float)

    adapter_path: Mapped[str | None] = mapped_column(String(1024))  # the .tar.gz, relative to data_dir
    adapter_bytes: Mapped[int | None] = mapped_column(BigInteger)
    adapter_sha256: Mapped[str | None] = mapped_column(String(64))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512))
    # Trackers the job's step metrics are mirrored to (worker/integrations.py), as the request gave them.
    integrations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # The comparison that made the job, if one did. No foreign key: the comparison is deleted after its jobs, and a
    # job deleted on its own just leaves its comparison one run shorter.
    comparison_id: Mapped[str | None] = mapped_column(String(32), index=True)

    @property
    def budget(self) -> float:
        """The fraction of candidates trained on: stored once, in the resolved configuration."""
        return float(self.config["budget"])


class Comparison(Base):
    """A group of ordinary jobs on one training dataset, judged on one held-out dataset: every chosen selector at
    every chosen budget (and `full`), once per seed 0..seeds-1. Its status, counts and report are computed from its
    jobs (api/services/comparisons.py); this row keeps only what was asked for."""

    __tablename__ = "comparisons"
    __table_args__ = (Index("ix_comparisons_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # cmp-<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(256))
    # No foreign keys to datasets, as for jobs: deleting a dataset must not delete (or be blocked by) a comparison.
    dataset_id: Mapped[str] = mapped_column(String(32))
    eval_dataset_id: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(512))
    methods: Mapped[list[str]] = mapped_column(JSONType)
    budgets: Mapped[list[float]] = mapped_column(JSONType)
    seeds: Mapped[int] = mapped_column(Integer)
    include_full: Mapped[bool] = mapped_column(Boolean)
    label_field: Mapped[str | None] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the shared training settings, as given
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    type: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class StepMetric(Base):
    """One optimizer step. The primary key (job_id, step) is what makes resumed writes idempotent."""

    __tablename__ = "step_metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    token_accuracy: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    tokens_trained: Mapped[int | None] = mapped_column(Integer)
    candidates: Mapped[int | None] = mapped_column(Integer)
    selected: Mapped[int | None] = mapped_column(Integer)
    time_scoring: Mapped[float | None] = mapped_column(Float)
    time_training: Mapped[float | None] = mapped_column(Float)
    alpha: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    eval_accuracy: Mapped[float | None] = mapped_column(Float)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Selection(Base):
    """One candidate example at one step: whether it was trained on, and its scores."""

    __tablename__ = "selections"
    __table_args__ = (
        Index("ix_selections_job_selected_step", "job_id", "selected", "step"),
        Index("ix_selections_job_row", "job_id", "row"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    selected: Mapped[bool] = mapped_column(Boolean)
    utility: Mapped[float | None] = mapped_column(Float)
    diversity: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))  # relative to data_dir
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResultFile(Base):
    """A job's result file in the OpenAI files API (purpose `fine-tune-results`): the per-step metrics CSV or the
    adapter archive. Recorded once the job has succeeded; the id is derived from (job_id, kind), so recording
    twice (two requests at once) collides on the primary key instead of making two files."""

    __tablename__ = "result_files"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", name="uq_result_files_job_kind"),
        Index("ix_result_files_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # file-<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # "step_metrics" | "adapter"
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_path: Mapped[str] = mapped_column(String(1024))  # relative to Settings.data_dir
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


TASK_KINDS = ("export", "generate")
TASK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobTask(Base):
    """A short piece of work on a finished job, run by a worker (the API never loads a model): a merged export
    (`export`, its archive in `path`) or a try-it generation (`generate`, its answers in `result`).

    Claimed with one conditional UPDATE (queued -> running), so a redelivered message runs it once."""

    __tablename__ = "job_tasks"
    __table_args__ = (
        Index("ix_job_tasks_job_kind", "job_id", "kind", "created_at"),
        Index("ix_job_tasks_status", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # export-<24 hex> | gen-<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the request: export kind, or prompt and sampling
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    path: Mapped[str | None] = mapped_column(String(1024))  # an export's archive, relative to data_dir
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims: a task lost twice is failed, not re-queued
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


WEBHOOK_EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "job.running")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class Webhook(Base):
    """A tenant's endpoint for job events. The secret signs each delivery (Standard Webhooks) and is shown once,
    at creation; it is stored as is because signing needs it (unlike API keys, which are only compared)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # wh_<24 hex>
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(String(128))  # whsec_<base64>
    description: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: an outbox row written in the transaction of the job's status change, sent by a
    worker until it is answered 2xx or runs out of attempts. The body is fixed here, so every retry signs and sends
    the same bytes under the same webhook-id (receivers deduplicate on it)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_<24 hex>, sent as webhook-id
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)  # one entry per attempt (the last 20)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

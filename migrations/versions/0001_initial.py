"""Initial schema: tenants, API keys, datasets, jobs, events, per-step metrics, selections, checkpoints.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the portable types in api/models.py: a migration must not change when the models do.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        ts("created_at", nullable=False),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        ts("created_at", nullable=False),
        ts("revoked_at"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("storage_path", sa.String(1024), nullable=False),
        ts("created_at", nullable=False),
    )
    op.create_index("ix_datasets_tenant_created", "datasets", ["tenant_id", "created_at", "id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("budget", sa.Float(), nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("eval_dataset_id", sa.String(32), nullable=True),
        sa.Column("metadata", JSONType, nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        ts("created_at", nullable=False),
        ts("started_at"),
        ts("finished_at"),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("examples_scored", sa.BigInteger(), nullable=False),
        sa.Column("examples_trained", sa.BigInteger(), nullable=False),
        sa.Column("tokens_trained", sa.BigInteger(), nullable=False),
        sa.Column("alpha_used", sa.Float(), nullable=True),
        sa.Column("latest_loss", sa.Float(), nullable=True),
        ts("progress_at"),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_param", sa.String(128), nullable=True),
        sa.Column("worker_id", sa.String(256), nullable=True),
        ts("heartbeat_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        ts("attempt_started_at"),
        sa.Column("attempt_start_step", sa.Integer(), nullable=False),
        sa.Column("adapter_path", sa.String(1024), nullable=True),
        sa.Column("adapter_bytes", sa.BigInteger(), nullable=True),
        sa.Column("adapter_sha256", sa.String(64), nullable=True),
        sa.Column("fine_tuned_model", sa.String(512), nullable=True),
    )
    # GET /jobs (newest first per tenant) and the workers' "queued or stale running" scans.
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant_id", "created_at", "id"])
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])

    op.create_table(
        "job_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        ts("created_at", nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", JSONType, nullable=True),
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"])

    # Primary key (job_id, step) doubles as the index for GET /jobs/{id}/metrics?after_step=.
    op.create_table(
        "step_metrics",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("token_accuracy", sa.Float(), nullable=True),
        sa.Column("learning_rate", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("tokens_trained", sa.Integer(), nullable=True),
        sa.Column("candidates", sa.Integer(), nullable=True),
        sa.Column("selected", sa.Integer(), nullable=True),
        sa.Column("time_scoring", sa.Float(), nullable=True),
        sa.Column("time_training", sa.Float(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("eval_accuracy", sa.Float(), nullable=True),
        sa.Column("stats", JSONType, nullable=True),
        ts("created_at", nullable=False),
    )

    op.create_table(
        "selections",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("row", sa.Integer(), primary_key=True),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("utility", sa.Float(), nullable=True),
        sa.Column("diversity", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
    )
    # ?selected=true|false pages by step; the per-row summary groups by row.
    op.create_index("ix_selections_job_selected_step", "selections", ["job_id", "selected", "step"])
    op.create_index("ix_selections_job_row", "selections", ["job_id", "row"])

    op.create_table(
        "checkpoints",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("metrics", JSONType, nullable=True),
        ts("created_at", nullable=False),
        sa.UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_index("ix_selections_job_row", table_name="selections")
    op.drop_index("ix_selections_job_selected_step", table_name="selections")
    op.drop_table("selections")
    op.drop_table("step_metrics")
    op.drop_index("ix_job_events_job_id_id", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index("ix_jobs_status_heartbeat", table_name="jobs")
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_datasets_tenant_created", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")

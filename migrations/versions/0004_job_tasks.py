"""job_tasks: short work on a finished job that a worker runs (merged exports, try-it generations), issue 14.

Revision ID: 0004_job_tasks
Revises: 0003_job_dispatched_at
Create Date: 2026-01-20
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_job_tasks"
down_revision = "0003_job_dispatched_at"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_job_tasks_job_kind", "job_tasks", ["job_id", "kind", "created_at"])
    op.create_index("ix_job_tasks_status", "job_tasks", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_job_tasks_status", table_name="job_tasks")
    op.drop_index("ix_job_tasks_job_kind", table_name="job_tasks")
    op.drop_table("job_tasks")

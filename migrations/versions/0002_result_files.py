"""Result files of the OpenAI-compatible API: a job's step-metrics CSV and adapter archive as `file-...` objects.

Revision ID: 0002_result_files
Revises: 0001_initial
Create Date: 2025-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_result_files"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "result_files",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_path", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "kind", name="uq_result_files_job_kind"),
    )
    op.create_index("ix_result_files_tenant_created", "result_files", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_result_files_tenant_created", table_name="result_files")
    op.drop_table("result_files")

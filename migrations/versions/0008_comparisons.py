"""comparisons, and jobs.comparison_id: a "compare methods" request is a group of ordinary jobs (every selector at
every budget, plus full, once per seed), its report computed from their metrics. Existing jobs belong to no
comparison (NULL). Issue 16, item 2.

Revision ID: 0008_comparisons
Revises: 0007_job_budget_in_config
Create Date: 2027-01-12
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_comparisons"
down_revision = "0007_job_budget_in_config"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("eval_dataset_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("methods", JSONType, nullable=False),
        sa.Column("budgets", JSONType, nullable=False),
        sa.Column("seeds", sa.Integer(), nullable=False),
        sa.Column("include_full", sa.Boolean(), nullable=False),
        sa.Column("label_field", sa.String(128), nullable=True),
        sa.Column("settings", JSONType, nullable=False),
        sa.Column("metadata", JSONType, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_comparisons_tenant_created", "comparisons", ["tenant_id", "created_at", "id"])
    op.add_column("jobs", sa.Column("comparison_id", sa.String(32), nullable=True))
    op.create_index("ix_jobs_comparison_id", "jobs", ["comparison_id"])


def downgrade() -> None:
    # The jobs stay (ordinary jobs again); only their link to the comparison goes.
    op.drop_index("ix_jobs_comparison_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("comparison_id")
    op.drop_index("ix_comparisons_tenant_created", table_name="comparisons")
    op.drop_table("comparisons")

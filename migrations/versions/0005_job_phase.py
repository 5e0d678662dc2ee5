"""jobs.phase, phase_started_at, eval_seconds: what a running job is doing (loading, training, evaluating, saving)
since when, and how long its last evaluation took, so the ETA covers evaluation and the dashboard does not show
"ETA 0 ms" through minutes of a final evaluation. Existing rows get NULL: no phase known, no evaluation measured.

Revision ID: 0005_job_phase
Revises: 0004_job_tasks
Create Date: 2025-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_job_phase"
down_revision = "0004_job_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("phase", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("phase_started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("eval_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("eval_seconds")
        batch.drop_column("phase_started_at")
        batch.drop_column("phase")

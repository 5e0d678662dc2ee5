"""jobs.time_scoring, time_training: a job's seconds spent scoring and selecting, and training on the picks, kept
on the job (sums over its steps, as the other running totals are) instead of read out of its summary event.
Existing jobs get the sums of their stored steps; a job with no stored steps keeps NULL.

Revision ID: 0009_job_run_times
Revises: 0008_comparisons
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_job_run_times"
down_revision = "0008_comparisons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("time_scoring", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("time_training", sa.Float(), nullable=True))
    op.execute(
        "UPDATE jobs SET "
        "time_scoring = (SELECT SUM(time_scoring) FROM step_metrics WHERE step_metrics.job_id = jobs.id), "
        "time_training = (SELECT SUM(time_training) FROM step_metrics WHERE step_metrics.job_id = jobs.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("time_training")
        batch.drop_column("time_scoring")

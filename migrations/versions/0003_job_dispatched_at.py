"""jobs.dispatched_at: when the job's Celery message was last sent, so the sweep can re-send a lost one (at most
once per UDS_REDISPATCH_AFTER_SECONDS). Existing rows get NULL: a queued one is sent again at the first sweep.

Revision ID: 0003_job_dispatched_at
Revises: 0002_result_files
Create Date: 2025-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_job_dispatched_at"
down_revision = "0002_result_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("dispatched_at")

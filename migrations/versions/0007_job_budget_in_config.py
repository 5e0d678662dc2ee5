"""jobs.budget dropped: the budget is stored once, in jobs.config (the resolved TrainConfig), where every other
setting is. The ORM's Job.budget reads it from there. Downgrade restores the column from the configuration.

Revision ID: 0007_job_budget_in_config
Revises: 0006_webhooks
Create Date: 2026-12-01
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0007_job_budget_in_config"
down_revision = "0006_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("budget")


def downgrade() -> None:
    op.add_column("jobs", sa.Column("budget", sa.Float(), nullable=True))
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("config", sa.Text), sa.column("budget", sa.Float))
    bind = op.get_bind()
    for job_id, config in bind.execute(sa.select(jobs.c.id, jobs.c.config)).all():
        values = config if isinstance(config, dict) else json.loads(config or "{}")
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(budget=values.get("budget")))

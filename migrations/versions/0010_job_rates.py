"""jobs.scoring_rate, jobs.training_rate, jobs.device_kind: a succeeded job's measured speed (candidates scored per
second of scoring, tokens trained per second of training) and the device it ran on, what the estimate of a job
before it starts is made from (POST /api/v1/jobs/estimate).

Existing succeeded jobs get their rates from their stored totals (where they have times), and their device kind from
their "started" event ("cpu" or "cuda": the GPU's name was not recorded then). Downgrade drops the columns.

Revision ID: 0010_job_rates
Revises: 0009_job_run_times
Create Date: 2026-12-06
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0010_job_rates"
down_revision = "0009_job_run_times"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("scoring_rate", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("training_rate", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("device_kind", sa.String(128), nullable=True))
    op.execute(
        "UPDATE jobs SET "
        "scoring_rate = CASE WHEN time_scoring > 0 AND examples_scored > 0 "
        "THEN examples_scored / time_scoring END, "
        "training_rate = CASE WHEN time_training > 0 AND tokens_trained > 0 "
        "THEN tokens_trained / time_training END "
        "WHERE status = 'succeeded'"
    )
    _backfill_device_kind()


def _backfill_device_kind() -> None:
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("status", sa.String), sa.column("device_kind"))
    events = sa.table(
        "job_events", sa.column("id"), sa.column("job_id", sa.String), sa.column("type"), sa.column("data", sa.Text)
    )
    bind = op.get_bind()
    started = (
        sa.select(events.c.job_id, events.c.data)
        .join(jobs, jobs.c.id == events.c.job_id)
        .where(jobs.c.status == "succeeded", events.c.type == "started")
        .order_by(events.c.id)
    )
    kinds: dict[str, str] = {}
    for job_id, data in bind.execute(started).all():
        values = data if isinstance(data, dict) else json.loads(data or "null")
        if isinstance(values, dict) and isinstance(values.get("device"), str):
            kinds[job_id] = values["device"][:128]  # the latest attempt's start wins
    for job_id, kind in kinds.items():
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(device_kind=kind))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite cannot DROP COLUMN everywhere; batch copies the table
        batch.drop_column("device_kind")
        batch.drop_column("training_rate")
        batch.drop_column("scoring_rate")

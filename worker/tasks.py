"""Celery tasks: thin, given only ids; everything else is in worker/runner.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from api.dispatch import SHORT_TASK_NAME, TASK_NAME
from worker.celery_app import app, settings
from worker.identity import worker_id
from worker.job_tasks import run_task as run_task_now
from worker.runner import run_job as run_job_now

# Both tasks: delivered at least once and idempotent (a claim is one conditional UPDATE), so acks_late is safe.
# Retried only for a database that is briefly unreachable at claim or finish time; training errors are
# recorded on the job (status failed) and never retried blindly.
DELIVERY: dict[str, Any] = dict(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)


@app.task(name=TASK_NAME, **DELIVERY)
def run_job(self, job_id: str) -> str | None:
    return run_job_now(job_id, worker_id(), settings)


# A merged export or a try-it generation: short, with the same delivery guarantees.
@app.task(name=SHORT_TASK_NAME, **DELIVERY)
def run_task(self, task_id: str) -> str | None:
    return run_task_now(task_id, worker_id(), settings)

"""Job events into webhook deliveries: written in the transaction of the status change itself (api/events.py
add_event), so an event is recorded for sending exactly when the change commits, whoever made it (a worker, the
recovery sweep, or the API cancelling a queued job). Workers send them (worker/webhooks.py); nothing here does
network I/O.
"""

from __future__ import annotations

import json
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models import Job, Webhook, WebhookDelivery, utcnow

EVENT_OF_STATUS = {
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
    "running": "job.running",
}


def record_status_event(session: Session, job_id: str, status: str | None) -> int:
    """One pending delivery per webhook of the job's tenant that subscribed to this status. Returns how many."""
    if status is None or status not in EVENT_OF_STATUS:
        return 0
    event = EVENT_OF_STATUS[status]
    # Columns, not session.get: the status change is usually a bulk UPDATE the identity map has not seen.
    job = session.execute(
        select(
            Job.id,
            Job.tenant_id,
            Job.status,
            Job.name,
            Job.model,
            Job.fine_tuned_model,
            Job.error_code,
            Job.error_message,
            Job.finished_at,
            Job.metadata_,
        ).where(Job.id == job_id)
    ).first()
    if job is None:
        return 0
    hooks = [h for h in session.scalars(select(Webhook).where(Webhook.tenant_id == job.tenant_id)) if event in h.events]
    if not hooks:
        return 0
    now = utcnow()
    body = json.dumps(
        {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": _job_data(job, status)},
        separators=(",", ":"),
    )
    for hook in hooks:
        session.add(
            WebhookDelivery(
                id="msg_" + secrets.token_hex(12),
                webhook_id=hook.id,
                tenant_id=job.tenant_id,
                job_id=job.id,
                event=event,
                payload=body,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                log=[],
                created_at=now,
            )
        )
    return len(hooks)


def _job_data(job, status: str) -> dict:
    error = {"code": job.error_code, "message": job.error_message} if status == "failed" and job.error_code else None
    return {
        "id": job.id,
        "object": "job",
        "status": status,
        "name": job.name,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model if status == "succeeded" else None,
        "error": error,
        "finished_at": job.finished_at.isoformat().replace("+00:00", "Z") if job.finished_at else None,
        "metadata": job.metadata_,
    }

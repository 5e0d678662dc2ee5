"""Job events: every status transition and anything a person should read about a job."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.models import JobEvent, utcnow


def add_event(session: Session, job_id: str, type: str, message: str, level: str = "info",
              data: dict[str, Any] | None = None) -> None:
    session.add(JobEvent(job_id=job_id, created_at=utcnow(), level=level, type=type, message=message, data=data))

"""Job events: every status transition and anything a person should read about a job.

Events are tenant-visible. A server's tracebacks and source paths are not for tenants (they map the deployment for
an attacker and help no user): those stay in the server log, and every event message is cleaned of them here, the
one place events are written, so no caller can leak one by accident.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from api.models import JobEvent, utcnow
from api.webhook_outbox import record_status_event

# From a traceback's first line to the end, and any absolute path to a Python source file (ours or a library's).
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)
_SOURCE_PATH = re.compile(r"""(?:[A-Za-z]:)?[/\\][^\s"'<>:]*\.pyc?\b""")
_FRAME = re.compile(r"""File "[^"]*", line \d+(?:, in \S+)?""")


def tenant_safe(text: str) -> str:
    """`text` without tracebacks or server source paths (each path becomes '<server file>')."""
    text = _TRACEBACK.sub("(traceback in the server log)", text)
    text = _FRAME.sub("<server file>", text)
    return _SOURCE_PATH.sub("<server file>", text)


def add_event(
    session: Session, job_id: str, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> None:
    session.add(
        JobEvent(job_id=job_id, created_at=utcnow(), level=level, type=type, message=tenant_safe(message), data=data)
    )
    if type == "status":  # every status transition passes here: the webhooks' outbox row joins its transaction
        record_status_event(session, job_id, (data or {}).get("status"))

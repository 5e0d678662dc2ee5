"""The per-job run-time limit (UDS_MAX_JOB_SECONDS): wall time from the job's first start, attempts and the waits
between them included, so a job re-queued by a restart does not get a fresh allowance. Checked at the training
loop's step boundary, through the logger's should_stop(), so the job stops cleanly and keeps its checkpoints."""

from __future__ import annotations

import datetime as dt

from api.models import utcnow


class TimeLimitedLogger:
    """Wraps the job's logger: should_stop() is also true once the deadline has passed (then `expired` is set)."""

    def __init__(self, inner, started_at: dt.datetime | None, limit_seconds: float):
        self.inner, self.limit_seconds, self.expired = inner, limit_seconds, False
        started = started_at or utcnow()
        if started.tzinfo is None:  # SQLite hands back naive UTC
            started = started.replace(tzinfo=dt.timezone.utc)
        self.deadline = started + dt.timedelta(seconds=limit_seconds) if limit_seconds else None

    def should_stop(self) -> bool:
        if self.deadline is not None and utcnow() >= self.deadline:
            self.expired = True
            return True
        return self.inner.should_stop()

    def __getattr__(self, name):  # log_step, log_event, lost, ...: the wrapped logger's
        return getattr(self.inner, name)

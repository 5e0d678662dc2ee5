"""A worker's lease on one running job: the only place that watches the job row while the job trains.

One thread, one period (`poll_seconds`, 0.25 s): each tick either renews the lease (the ownership-fenced UPDATE of
`heartbeat_at`, every `heartbeat_seconds`) or reads the job's cancel flag and owner (one primary-key SELECT).
Either can find that the job is no longer ours (re-queued by a sweep and claimed by another worker); from then on
`lost` is true and stays true, and every writer of this job (worker/db_logger.py) writes nothing more.

`should_stop()` is what the training loop asks once per step (through the logger): lost, cancelled, or this process
is shutting down (`shutdown`). It does not touch the database on the training thread once the lease thread runs;
it reads synchronously before that, and when the thread has not managed a read for a while.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.models import Job, utcnow
from worker.identity import owned_update
from worker.retry import with_retries

log = logging.getLogger(__name__)


class JobLease:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        worker_id: str,
        heartbeat_seconds: float = 30.0,
        poll_seconds: float = 0.25,
        shutdown: threading.Event | None = None,
    ):
        self.sessions, self.job_id, self.worker_id = sessions, job_id, worker_id
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.shutdown = shutdown or threading.Event()  # set when this process stops: end at the step, stay resumable
        self.cancel_requested = False
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_read = 0.0  # time.monotonic() of the last successful read of the row
        self._last_beat = time.monotonic()  # the claim itself set heartbeat_at

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def lose(self) -> None:
        """Someone else owns the job now (a fenced write matched no row, or a read showed another owner)."""
        self._lost.set()

    def start(self) -> JobLease:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def should_stop(self) -> bool:
        if self.lost or self.shutdown.is_set():
            return True
        stale = time.monotonic() - self._last_read > max(5.0, 20 * self.poll_seconds)
        if self._thread is None or stale:
            self.read()  # no lease thread, or it is not getting through: ask now
        return self.lost or self.cancel_requested

    def read(self) -> None:
        """Read the cancel flag and check ownership (one primary-key SELECT)."""

        def select_row():
            with self.sessions() as session:
                return session.execute(
                    select(Job.cancel_requested, Job.status, Job.worker_id).where(Job.id == self.job_id)
                ).first()

        row = with_retries(select_row, f"job {self.job_id}: lease read")
        if row is None or row.status != "running" or row.worker_id != self.worker_id:
            self.lose()
        else:
            self.cancel_requested = bool(row.cancel_requested)
        self._last_read = time.monotonic()

    def renew(self) -> None:
        """Prove this worker alive (heartbeat_at = now), only while it owns the job."""
        with self.sessions.begin() as session:
            matched = session.execute(owned_update(self.job_id, self.worker_id).values(heartbeat_at=utcnow())).rowcount
        if not matched:
            self.lose()
        self._last_beat = time.monotonic()

    def _run(self) -> None:
        while not self._done.wait(self.poll_seconds) and not self.lost:
            try:
                if time.monotonic() - self._last_beat >= self.heartbeat_seconds:
                    self.renew()
                else:
                    self.read()
            except Exception:  # a database hiccup: keep going; staleness is judged over minutes
                log.warning("lease of %s: database call failed", self.job_id, exc_info=True)

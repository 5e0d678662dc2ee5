"""The in-process worker of `uds serve` without a broker: a thread that takes queued jobs from the database,
one at a time, in turns by tenant (worker/fairness.py), and runs them with the same `runner.run_job` as the Celery
task.

At start it re-queues jobs a previous process left `running`, so a restarted server resumes them. `wakeup` is the
event the API's dispatcher sets when a job is created (`uds serve` hands it over).
"""

from __future__ import annotations

import logging
import threading
import time

from api.db import migrate, session_factory
from api.settings import Settings
from worker.fairness import next_job_order, queue_snapshot
from worker.identity import worker_id
from worker.recovery import recover_jobs
from worker.runner import run_job

log = logging.getLogger(__name__)


class EmbeddedWorker(threading.Thread):
    def __init__(self, settings: Settings, wakeup: threading.Event | None = None):
        super().__init__(name="uds-embedded-worker", daemon=True)
        self.settings = settings
        self.wakeup = wakeup or threading.Event()
        self.stopping = threading.Event()
        self.current_job: str | None = None

    def next_job(self) -> str | None:
        """The oldest queued job of the tenant served least recently: round robin by tenant (worker/fairness.py)."""
        with session_factory(self.settings.sqlalchemy_url)() as session:
            queued, last_served, _ = queue_snapshot(session)
        order = next_job_order(queued, last_served)
        return order[0] if order else None

    def run(self) -> None:
        migrate(self.settings.sqlalchemy_url)
        last_sweep = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() - last_sweep > self.settings.stale_after_seconds / 2:
                    recover_jobs(self.settings)  # the job rows are the queue here: nothing to dispatch
                    last_sweep = time.monotonic()
                job_id = self.next_job()
                if job_id is None:
                    self.wakeup.wait(self.settings.embedded_poll_seconds)
                    self.wakeup.clear()
                    continue
                self.current_job = job_id
                status = run_job(job_id, worker_id(), self.settings, stop_event=self.stopping)
                log.info("job %s: %s", job_id, status)
                if status is None:  # not ours to run now (its tenant's turn, or more devices than offered here)
                    self.wakeup.wait(self.settings.embedded_poll_seconds)
                    self.wakeup.clear()
            except Exception:
                log.exception("embedded worker loop error")
                self.stopping.wait(self.settings.embedded_poll_seconds)
            finally:
                self.current_job = None

    def stop(self, timeout: float = 60) -> None:
        """Stop at the running job's next step boundary; the job goes back to `queued` for the next start."""
        self.stopping.set()
        self.wakeup.set()
        self.join(timeout)

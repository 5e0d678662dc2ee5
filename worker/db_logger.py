"""The trainer's logger (uds.reporter.TrainLogger) backed by the database.

- Step metrics and per-candidate selection rows are buffered and written in one transaction every
  `flush_steps` steps or `flush_seconds` seconds, and whenever the trainer calls flush() (before each checkpoint
  and at the end). Never a transaction per step.
- The batched writes run on a writer thread, so the training loop does not wait for the database; flush() does
  wait, which is what makes "the metrics up to a checkpoint are stored before the checkpoint exists" hold. A
  write error surfaces at the next log_step/flush (the job then fails with it), and a database slower than the
  training loop applies back-pressure (at most a few batches queue up).
- Writes are idempotent on (job_id, step): a batch first deletes every row of this job at or after its first
  step, and a resumed run first deletes everything after its checkpoint step. So a step logged twice (a crash
  after a flush but before the next checkpoint) ends up once, and a resumed job has no gaps and no duplicates.
- Every write is fenced by ownership: it updates the job row only `WHERE worker_id = <us> AND status = 'running'`
  and writes nothing if that matched no row (the job was re-queued and claimed by another worker).
- Events and checkpoint records go through the same writer thread, in order, after the steps before them.
- Watching the job row (heartbeat, cancel flag, owner) is not this class's business: that is the job's lease
  (worker/lease.py). should_stop() asks the lease; a fenced write that matches no row tells the lease it is lost.
- Every database call is retried with backoff through a lost connection (worker/retry.py); all of them are
  idempotent, so a retried transaction whose first commit did land writes the same rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from api.events import add_event
from api.models import Checkpoint, Selection, StepMetric, utcnow
from uds.records import METRIC_FIELDS, Phase, StepRecord
from worker.identity import owned_update
from worker.lease import JobLease
from worker.ordered_writer import OrderedWriter
from worker.retry import with_retries

log = logging.getLogger(__name__)

# The job row's running totals: each is the sum of a step column over the job's stored steps, of this type.
_TOTALS: dict[str, tuple[str, type]] = {
    "examples_scored": ("candidates", int),
    "examples_trained": ("selected", int),
    "tokens_trained": ("tokens_trained", int),
    "time_scoring": ("time_scoring", float),
    "time_training": ("time_training", float),
}


def clean(value: Any) -> Any:
    """JSON and float columns without NaN/inf (Postgres JSONB rejects them; clients choke on them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a stray 0-d tensor or numpy scalar
        return clean(value.item())
    return value


class MetricsWriteError(RuntimeError):
    """Writing metrics to the database failed; the training run stops with this."""


class DbLogger:
    """`lease`: the job's lease (worker/lease.py), started by the caller; without one, an unstarted lease that
    reads the row whenever should_stop() is asked (enough for a logger used on its own, as in tests)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        worker_id: str,
        lease: JobLease | None = None,
        resume_step: int = 0,
        flush_steps: int = 20,
        flush_seconds: float = 2.0,
        checkpoint_every: int | None = None,
        relative_path: Callable[[str], str] = lambda p: p,
        background: bool = True,
    ):
        self.sessions = sessions
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease = lease or JobLease(sessions, job_id, worker_id)
        self.flush_steps = flush_steps
        self.flush_seconds = flush_seconds
        # The trainer saves a checkpoint right after log_step of step s when s % checkpoint_every == 0 (or s is
        # the last step). Metrics up to s must be stored before that checkpoint exists: a crash in between would
        # otherwise resume after s with steps missing that no one will log again.
        self.checkpoint_every = checkpoint_every
        self.relative_path = relative_path
        self.batches_written = 0
        self._metrics: list[dict[str, Any]] = []
        self._selections: list[dict[str, Any]] = []
        self._progress: dict[str, Any] | None = None
        self._first_step: tuple[int, Any] | None = None
        self._pending_attempt: dict[str, Any] = {}
        self._phase: tuple[Phase, Any] | None = None  # (name, started at) of the phase last logged
        self._last_handoff = time.monotonic()
        self._totals: dict[str, Any] = {name: kind(0) for name, (_, kind) in _TOTALS.items()}
        self._writer = OrderedWriter(f"metrics-{job_id}", background, skip=lambda: self.lost)
        self.resume_step = resume_step
        self._last_step = resume_step
        self.reset_after(resume_step)

    @property
    def lost(self) -> bool:
        """Another worker owns the job now: write nothing more."""
        return self.lease.lost

    # ---- resume -------------------------------------------------------------------------------------------

    def reset_after(self, step: int) -> None:
        """Forget everything after `step` (the checkpoint a resumed run continues from) and restore the
        job's counters to their values at `step`, summed from the rows that remain. Synchronous."""
        self.resume_step = step
        self._last_step = step
        self._metrics.clear()
        self._selections.clear()
        with_retries(lambda: self._reset_rows(step), f"job {self.job_id}: resume at step {step}")

    def _reset_rows(self, step: int) -> None:
        with self.sessions.begin() as session:
            # The rows kept (step <= `step`) are the ones the deletes below leave alone, so they can be read first
            # and the job row updated once.
            sums = session.execute(
                select(
                    *(func.coalesce(func.sum(getattr(StepMetric, column)), 0) for column, _ in _TOTALS.values())
                ).where(StepMetric.job_id == self.job_id, StepMetric.step <= step)
            ).one()
            totals = {name: kind(value) for (name, (_, kind)), value in zip(_TOTALS.items(), sums, strict=True)}
            last = session.execute(
                select(StepMetric.loss, StepMetric.epoch, StepMetric.alpha).where(
                    StepMetric.job_id == self.job_id, StepMetric.step == step
                )
            ).first()
            values: dict[str, Any] = {
                "current_step": step,
                "attempt_start_step": step,
                **totals,
                "latest_loss": None,
                "epoch": None,
                "alpha_used": None,
            }
            if last is not None:
                values.update(latest_loss=last[0], epoch=last[1], alpha_used=last[2])
            # Ownership before the deletes: a worker that lost the job must not delete the new owner's rows.
            if not self._fenced_update(session, values):
                return
            self._totals = totals
            for table in (StepMetric, Selection, Checkpoint):
                session.execute(delete(table).where(table.job_id == self.job_id, table.step > step))

    # ---- TrainLogger --------------------------------------------------------------------------------------

    def log_step(self, metrics: StepRecord) -> None:
        self._raise_write_error()
        if self.lost:
            return
        step = int(metrics["step"])
        now = utcnow()
        if step <= self._last_step:
            # The same step again, or an earlier one: everything from it on is superseded. Rare: a step logged twice,
            # or the trainer resumed from an older checkpoint than the newest one the runner saw (the newest was
            # unreadable). Take the simple exact route: write what we have, then rewind.
            self.flush()
            self.reset_after(step - 1)
        self._last_step = step
        row = {"job_id": self.job_id, "step": step, "created_at": now, "stats": clean(metrics.get("stats"))}
        for column in METRIC_FIELDS:
            row[column] = clean(metrics.get(column))
        self._metrics.append(row)
        for s in metrics.get("selections") or ():
            self._selections.append(
                {
                    "job_id": self.job_id,
                    "step": step,
                    "row": int(s["row"]),
                    "selected": bool(s["selected"]),
                    "utility": clean(s.get("utility")),
                    "diversity": clean(s.get("diversity")),
                    "score": clean(s.get("score")),
                }
            )
        for name, (column, kind) in _TOTALS.items():
            self._totals[name] += kind(metrics.get(column) or 0)
        self._progress = {
            "current_step": step,
            "epoch": row["epoch"],
            "latest_loss": row["loss"],
            "alpha_used": row["alpha"],
            **self._totals,
        }
        if metrics.get("total_steps"):
            self._progress["total_steps"] = int(metrics["total_steps"])
        if self._first_step is None:
            # The step rate (for the ETA) is measured from the end of this attempt's first step, so model
            # loading and warm-up do not count.
            self._first_step = (step, now)
            self._pending_attempt = {"attempt_start_step": step, "attempt_started_at": now}
        self._progress.update(self._pending_attempt)
        total = self._progress.get("total_steps")
        if self.checkpoint_every and (step % self.checkpoint_every == 0 or step == total):
            self.flush()
        elif len(self._metrics) >= self.flush_steps or time.monotonic() - self._last_handoff >= self.flush_seconds:
            self._handoff()

    def log_event(self, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        if self.lost:
            return
        data = clean(data)

        def write():
            with self.sessions.begin() as session:
                add_event(session, self.job_id, type, message, level=level, data=data)

        self._handoff()  # the steps before the event are written before it
        self._writer.submit(lambda: with_retries(write, f"job {self.job_id}: event"))

    def log_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        if self.lost:
            return
        relative, metrics = self.relative_path(path), clean(metrics)

        def write():
            with self.sessions.begin() as session:
                session.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.step == step))
                session.add(
                    Checkpoint(job_id=self.job_id, step=step, path=relative, metrics=metrics, created_at=utcnow())
                )
                add_event(session, self.job_id, "checkpoint", f"Checkpoint saved at step {step}.", data={"step": step})

        # Steps up to `step` were stored before the checkpoint was written (see log_step); the record of the
        # checkpoint itself only needs to follow them, not to hold up training.
        self._handoff()
        self._writer.submit(lambda: with_retries(write, f"job {self.job_id}: checkpoint {step}"))

    def log_phase(self, name: Phase, data: dict[str, Any] | None = None) -> None:
        """The phase and its start go on the job row; leaving an evaluation records how long it took (the ETA's
        measure of evaluation). Written in order after the steps before it, not held back like metrics."""
        if self.lost:
            return
        now = utcnow()
        values: dict[str, Any] = {"phase": name, "phase_started_at": now}
        if self._phase is not None and self._phase[0] == "evaluating" and name != "evaluating":
            values["eval_seconds"] = round((now - self._phase[1]).total_seconds(), 3)
        self._phase = (name, now)

        def write():
            with self.sessions.begin() as session:
                self._fenced_update(session, values)

        self._handoff()
        self._writer.submit(lambda: with_retries(write, f"job {self.job_id}: phase"))

    def should_stop(self) -> bool:
        return self.lease.should_stop()

    def flush(self) -> None:
        """Write everything logged so far and wait until it is stored."""
        self._handoff()
        self._writer.wait()
        self._raise_write_error()

    def close(self) -> None:
        """Flush (errors are logged, not raised: the job's outcome is being recorded) and stop the writer."""
        try:
            self.flush()
        except Exception:
            log.exception("final metrics flush for %s failed", self.job_id)
        self._writer.close()

    # ---- writing ------------------------------------------------------------------------------------------

    def _handoff(self) -> None:
        if self.lost or (not self._metrics and self._progress is None):
            return
        batch = (self._metrics, self._selections, self._progress)
        self._metrics, self._selections, self._progress = [], [], None
        self._pending_attempt = {}
        self._last_handoff = time.monotonic()
        self._writer.submit(lambda: self._write(batch))

    def _write(self, batch) -> None:
        if with_retries(lambda: self._write_once(batch), f"job {self.job_id}: metrics"):
            self.batches_written += 1

    def _write_once(self, batch) -> bool:
        metrics, selections, progress = batch
        with self.sessions.begin() as session:
            if not self._fenced_update(session, {**(progress or {}), "progress_at": utcnow()}):
                return False
            if metrics:
                first = min(m["step"] for m in metrics)
                # Delete-then-insert: idempotent on (job_id, step) on every database, without dialect upserts.
                session.execute(delete(StepMetric).where(StepMetric.job_id == self.job_id, StepMetric.step >= first))
                session.execute(delete(Selection).where(Selection.job_id == self.job_id, Selection.step >= first))
                session.execute(insert(StepMetric), metrics)
                if selections:
                    session.execute(insert(Selection), selections)
        return True

    def _raise_write_error(self) -> None:
        error = self._writer.take_error()
        if error is not None:
            raise MetricsWriteError(f"could not store the job's metrics: {type(error).__name__}: {error}") from error

    def _fenced_update(self, session: Session, values: dict[str, Any]) -> bool:
        values = {**values, "heartbeat_at": utcnow()}
        matched = session.execute(owned_update(self.job_id, self.worker_id).values(**values)).rowcount
        if not matched:
            log.warning("job %s is no longer owned by %s; dropping its buffered metrics", self.job_id, self.worker_id)
            self.lease.lose()  # the training thread stops buffering at its next call, and stops at the next step
        return bool(matched)


__all__ = ["DbLogger", "MetricsWriteError", "clean"]

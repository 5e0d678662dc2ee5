"""Run one job: claim it, train it (resuming from its newest checkpoint), record the outcome.

Used by the Celery task (worker/tasks.py) and by the embedded worker thread (worker/embedded.py) alike.
Idempotent: the claim is one conditional UPDATE, so a redelivered or duplicated task finds the job running
(or finished) and returns without training.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update

from api.db import migrate, session_factory
from api.events import add_event
from api.models import Dataset, Job, Tenant, utcnow
from api.settings import Settings, get_settings
from worker.db_logger import DbLogger
from worker.identity import owned_update, owner_is_dead
from worker.retry import with_retries

log = logging.getLogger(__name__)


def claim(sessions, job_id: str, worker_id: str, stale_after: float) -> Job | None:
    """Make `worker_id` the owner of the job if it is queued, or running with a lost owner. None if not claimable."""
    now = utcnow()
    with sessions() as session:
        current = session.execute(select(Job.status, Job.worker_id, Job.heartbeat_at).where(Job.id == job_id)).first()
        if current is None:
            log.warning("job %s does not exist", job_id)
            return None
        condition = [Job.id == job_id, Job.status == current.status]
        if current.status == "running":
            stale = current.heartbeat_at is None or current.heartbeat_at < now - dt.timedelta(seconds=stale_after)
            # Ours (a retry in this process), provably dead (same host, process gone), or silent for too long.
            if not (current.worker_id == worker_id or stale or owner_is_dead(current.worker_id)):
                log.info("job %s is running on %s; not claiming it", job_id, current.worker_id)
                return None
            # The row must be exactly as we judged it: if the owner heartbeats in between, the claim fails.
            condition += [Job.worker_id.is_(None) if current.worker_id is None else Job.worker_id == current.worker_id,
                          Job.heartbeat_at.is_(None) if current.heartbeat_at is None
                          else Job.heartbeat_at == current.heartbeat_at]
        elif current.status != "queued":
            log.info("job %s is %s; nothing to do", job_id, current.status)
            return None
        claimed = session.execute(
            update(Job).where(*condition).values(status="running", worker_id=worker_id, heartbeat_at=now,
                                                 attempts=Job.attempts + 1, attempt_started_at=now, progress_at=None)
        ).rowcount
        if claimed != 1:
            session.rollback()
            return None
        job = session.get(Job, job_id)
        if job.started_at is None:
            job.started_at = now
        previous = f" (previous owner {current.worker_id} lost)" if current.status == "running" else ""
        add_event(session, job_id, "status", f"Running on worker {worker_id}, attempt {job.attempts}{previous}.",
                  data={"status": "running", "worker_id": worker_id, "attempt": job.attempts})
        session.commit()
        return job


class Heartbeat(threading.Thread):
    """Proves the owner alive between steps, however long a step takes; notices when the job was taken away."""

    def __init__(self, sessions, job_id: str, worker_id: str, every: float, on_lost: Callable[[], None]):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.sessions, self.job_id, self.worker_id, self.every, self.on_lost = sessions, job_id, worker_id, every, on_lost
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                with self.sessions.begin() as session:
                    matched = session.execute(
                        owned_update(self.job_id, self.worker_id).values(heartbeat_at=utcnow())
                    ).rowcount
                if not matched:
                    self.on_lost()
                    return
            except Exception:  # a database hiccup: keep beating; staleness is judged over minutes
                log.warning("heartbeat for %s failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        self.done.set()


def _finish(sessions, job_id: str, worker_id: str, status: str, message: str, level: str = "info", **values) -> bool:
    """The final transition, only if we still own the job. Retried through a lost database connection."""
    def transition() -> bool:
        with sessions.begin() as session:
            matched = session.execute(owned_update(job_id, worker_id).values(status=status, **values)).rowcount
            if matched:
                add_event(session, job_id, "status", message, level=level, data={"status": status})
                return True
            # A retry after a commit whose acknowledgement was lost: the transition is already ours.
            row = session.execute(select(Job.status, Job.worker_id).where(Job.id == job_id)).first()
            return row is not None and tuple(row) == (status, worker_id)

    matched = with_retries(transition, f"job {job_id}: mark {status}")
    if not matched:
        log.warning("job %s was taken from %s before it could be marked %s", job_id, worker_id, status)
    return bool(matched)


def _requeue(sessions, job_id: str, worker_id: str, message: str) -> bool:
    def transition() -> bool:
        with sessions.begin() as session:
            matched = session.execute(
                owned_update(job_id, worker_id).values(status="queued", worker_id=None, heartbeat_at=None)
            ).rowcount
            if matched:
                add_event(session, job_id, "status", message, data={"status": "queued"})
        return bool(matched)

    return with_retries(transition, f"job {job_id}: re-queue")


def resume_step(output_dir: Path) -> int:
    from uds.checkpoint import latest_checkpoint

    latest = latest_checkpoint(str(output_dir / "checkpoints"))
    return latest.step if latest else 0


def fine_tuned_name(job: Job, organization: str) -> str:
    from api.services.jobs import fine_tuned_model_name

    return fine_tuned_model_name(job.model, organization, job.suffix, job.id)


def run_job(job_id: str, worker_id: str, settings: Settings | None = None,
            stop_event: threading.Event | None = None,
            on_requeue: Callable[[str], None] | None = None) -> str | None:
    """Train job `job_id` as `worker_id`. Returns the job's final status, or None when it was not ours to run.

    `stop_event`: set when this process shuts down; the job stops at the next step boundary and goes back to
    `queued` (then `on_requeue(job_id)` re-dispatches it), to resume from its newest checkpoint.
    """
    settings = settings or get_settings()
    migrate(settings.sqlalchemy_url)
    sessions = session_factory(settings.sqlalchemy_url)
    job = claim(sessions, job_id, worker_id, settings.stale_after_seconds)
    if job is None:
        return None

    def fail(code: str, message: str, **values) -> str | None:
        done = _finish(sessions, job_id, worker_id, "failed", f"Failed: {message}", level="error",
                       finished_at=utcnow(), error_code=code, error_message=message, **values)
        return "failed" if done else None

    if job.cancel_requested:
        _finish(sessions, job_id, worker_id, "cancelled", "Cancelled before training started.", finished_at=utcnow())
        return "cancelled"
    with sessions() as session:
        dataset = session.get(Dataset, job.dataset_id)
        organization = session.get(Tenant, job.tenant_id).name
        eval_dataset = session.get(Dataset, job.eval_dataset_id) if job.eval_dataset_id else None
    if dataset is None or (job.eval_dataset_id and eval_dataset is None):
        missing = job.dataset_id if dataset is None else job.eval_dataset_id
        return fail("dataset_missing", f"Dataset {missing} no longer exists.", error_param="dataset_id")

    for record in (dataset, eval_dataset):
        if record is not None and not settings.resolve(record.storage_path).is_file():
            return fail("dataset_missing", f"The file of dataset {record.id} is missing from the data folder "
                        f"({settings.data_dir}); is the artifact volume shared with this worker?",
                        error_param="dataset_id")

    from uds.config import ConfigError, TrainConfig

    output_dir = settings.job_dir(job_id)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # raised here, it would escape run_job and leave the job `running` until swept
        return fail("artifact_write_failed", f"Cannot create the job's folder {output_dir} ({exc.strerror or exc}): "
                    "check that the data folder is writable and has free space.")
    try:
        config = TrainConfig.from_dict({
            **job.config,
            "dataset_path": str(settings.resolve(dataset.storage_path)),
            "eval_dataset_path": str(settings.resolve(eval_dataset.storage_path)) if eval_dataset else None,
            "output_dir": str(output_dir), "models_dir": str(settings.models_dir), "device": settings.device,
        })
    except ConfigError as exc:  # a config stored by an older version that this one rejects
        return fail("invalid_config", f"{exc.param}: {exc.message}", error_param=exc.param)

    data_dir = str(settings.data_dir)
    logger = DbLogger(sessions, job_id, worker_id, resume_step=resume_step(output_dir),
                      flush_steps=settings.metrics_flush_steps, flush_seconds=settings.metrics_flush_seconds,
                      stop_event=stop_event, relative_path=lambda p: os.path.relpath(p, data_dir),
                      checkpoint_every=config.checkpoint_every)
    heartbeat = Heartbeat(sessions, job_id, worker_id, settings.heartbeat_seconds, on_lost=lambda: setattr(logger, "lost", True))
    heartbeat.start()
    try:
        from uds.trainer import TrainingError, train

        try:
            result = train(config, logger, resume=True, allowed_models=settings.models)
        except TrainingError as exc:
            logger.close()
            return fail(exc.code, exc.message)
        except Exception as exc:
            log.exception("job %s crashed", job_id)
            logger.close()
            with sessions.begin() as session:
                add_event(session, job_id, "traceback", f"{type(exc).__name__}: {exc}", level="error",
                          data={"traceback": traceback.format_exc()[-8000:]})
            return fail("internal_error", f"Training stopped with an unexpected error: {type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
        logger.close()  # the metric writer thread drains before the outcome is recorded

    if logger.lost:
        return None
    if result.status == "cancelled":
        if stop_event is not None and stop_event.is_set():
            step = resume_step(output_dir)
            if _requeue(sessions, job_id, worker_id, f"Worker shutting down; job re-queued, resumes from step {step}."):
                if on_requeue is not None:
                    on_requeue(job_id)
                return "queued"
            return None
        done = _finish(sessions, job_id, worker_id, "cancelled",
                       f"Cancelled after {result.steps_done} of {result.total_steps} steps.", finished_at=utcnow())
        return "cancelled" if done else None

    try:
        from worker.artifacts import ARCHIVE_NAME, package_adapter

        archive = output_dir / ARCHIVE_NAME
        size, digest = package_adapter(result.adapter_dir, archive)
    except OSError as exc:
        return fail("artifact_write_failed", f"Could not write the adapter archive: {exc}")
    done = _finish(
        sessions, job_id, worker_id, "succeeded",
        f"Succeeded: {result.steps_done} steps; adapter {size} bytes, sha256 {digest[:12]}...",
        finished_at=utcnow(), adapter_path=os.path.relpath(archive, data_dir), adapter_bytes=size,
        adapter_sha256=digest, fine_tuned_model=fine_tuned_name(job, organization), current_step=result.steps_done,
    )
    return "succeeded" if done else None

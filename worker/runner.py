"""Run one job: claim it, then prepare (inputs, folder, configuration), train (under the job's lease, resuming from
its newest checkpoint) and record the outcome.

Used by the Celery task (worker/tasks.py) and by the embedded worker thread (worker/embedded.py) alike.
Idempotent: the claim is one conditional UPDATE, so a redelivered or duplicated task finds the job running
(or finished) and returns without training.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from api.db import migrate, session_factory
from api.dispatch import job_devices
from api.events import add_event, tenant_safe
from api.ids import fine_tuned_model_name
from api.models import Dataset, Job, Tenant, utcnow
from api.settings import Settings, get_settings
from worker import fairness
from worker.db_logger import DbLogger
from worker.identity import owned_update, owner_lost
from worker.integrations import mirror_metrics
from worker.lease import JobLease
from worker.retry import with_retries
from worker.time_limit import TimeLimitedLogger

log = logging.getLogger(__name__)


def claim(
    sessions, job_id: str, worker_id: str, stale_after: float, running_cap: int = 0, devices_offered: int = 64
) -> Job | None:
    """Make `worker_id` the owner of the job if it is queued, or running with a lost owner. None if not claimable,
    if its tenant has `running_cap` jobs running while others wait (worker/fairness.py), or if it asks for more
    devices than this worker offers (left queued for a worker that has them)."""
    now = utcnow()
    with sessions() as session:
        current = session.execute(
            select(Job.status, Job.worker_id, Job.heartbeat_at, Job.tenant_id, Job.config).where(Job.id == job_id)
        ).first()
        if current is None:
            log.warning("job %s does not exist", job_id)
            return None
        asked = job_devices(current.config)
        if asked > devices_offered:
            log.info("job %s asks for %s devices, this worker offers %s", job_id, asked, devices_offered)
            return None
        condition = [Job.id == job_id, Job.status == current.status]
        if current.status == "running":
            # Ours (a retry in this process), provably dead (same host, process gone), or silent for too long.
            cutoff = now - dt.timedelta(seconds=stale_after)
            if not (current.worker_id == worker_id or owner_lost(current.worker_id, current.heartbeat_at, cutoff)):
                log.info("job %s is running on %s; not claiming it", job_id, current.worker_id)
                return None
            # The row must be exactly as we judged it: if the owner heartbeats in between, the claim fails.
            condition += [
                Job.worker_id.is_(None) if current.worker_id is None else Job.worker_id == current.worker_id,
                Job.heartbeat_at.is_(None)
                if current.heartbeat_at is None
                else Job.heartbeat_at == current.heartbeat_at,
            ]
        elif current.status != "queued":
            log.info("job %s is %s; nothing to do", job_id, current.status)
            return None
        elif fairness.must_wait(session, current.tenant_id, running_cap):
            fairness.leave_for_the_sweep(session, job_id)
            log.info("job %s waits: its tenant is at its cap of running jobs while others wait", job_id)
            return None
        claimed = session.execute(
            update(Job)
            .where(*condition)
            .values(
                status="running",
                worker_id=worker_id,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                attempt_started_at=now,
                progress_at=None,
            )
        ).rowcount
        if claimed != 1:
            session.rollback()
            return None
        job = session.get(Job, job_id)
        if job.started_at is None:
            job.started_at = now
        previous = f" (previous owner {current.worker_id} lost)" if current.status == "running" else ""
        add_event(
            session,
            job_id,
            "status",
            f"Running on worker {worker_id}, attempt {job.attempts}{previous}.",
            data={"status": "running", "worker_id": worker_id, "attempt": job.attempts},
        )
        session.commit()
        return job


def _transition(sessions, job_id: str, owner: str, status: str, message: str, level: str = "info", **values) -> bool:
    """Move the job `owner` runs to `status` (setting `values` too) with its status event; False if we no longer own it.

    Retried through a lost database connection. A retry after a commit whose acknowledgement was lost finds the row
    already as the transition left it, and counts that as done. For a re-queue that state (queued, no owner) is
    also what a recovery sweep leaves; taking it for ours then only sends the job to the queue once more, and a
    claim takes it once.
    """
    owner_after = values.get("worker_id", owner)

    def transition() -> bool:
        with sessions.begin() as session:
            matched = session.execute(owned_update(job_id, owner).values(status=status, **values)).rowcount
            if matched:
                add_event(session, job_id, "status", message, level=level, data={"status": status})
                return True
            row = session.execute(select(Job.status, Job.worker_id).where(Job.id == job_id)).first()
            return row is not None and tuple(row) == (status, owner_after)

    done = with_retries(transition, f"job {job_id}: mark {status}")
    if not done:
        log.warning("job %s was taken from %s before it could be marked %s", job_id, owner, status)
    return bool(done)


def resume_step(output_dir: Path) -> int:
    from uds.checkpoint import latest_checkpoint

    latest = latest_checkpoint(str(output_dir / "checkpoints"))
    return latest.step if latest else 0


class JobFailure(Exception):
    """The job cannot succeed; recorded as `failed` with this code, message and parameter."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class ClaimedJob:
    """A job this worker has claimed, on its way through prepare -> train -> record."""

    job: Job
    worker_id: str
    settings: Settings
    sessions: sessionmaker
    organization: str = ""

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def output_dir(self) -> Path:
        return self.settings.job_dir(self.id)

    def finish(self, status: str, message: str, level: str = "info", **values) -> str | None:
        """The final transition; None when the job was taken from us first."""
        if status in ("succeeded", "failed", "cancelled"):
            values.setdefault("finished_at", utcnow())
        return status if _transition(self.sessions, self.id, self.worker_id, status, message, level, **values) else None

    def fail(self, failure: JobFailure) -> str | None:
        return self.finish(
            "failed",
            f"Failed: {failure.message}",
            level="error",
            error_code=failure.code,
            error_message=tenant_safe(failure.message),
            error_param=failure.param,
        )


def run_job(
    job_id: str,
    worker_id: str,
    settings: Settings | None = None,
    stop_event: threading.Event | None = None,
    on_requeue: Callable[[str], None] | None = None,
) -> str | None:
    """Train job `job_id` as `worker_id`. Returns the job's final status, or None when it was not ours to run.

    `stop_event`: set when this process shuts down; the job stops at the next step boundary and goes back to
    `queued` (then `on_requeue(job_id)` re-dispatches it), to resume from its newest checkpoint.
    """
    settings = settings or get_settings()
    migrate(settings.sqlalchemy_url)
    sessions = session_factory(settings.sqlalchemy_url)
    job = claim(
        sessions,
        job_id,
        worker_id,
        settings.stale_after_seconds,
        settings.max_running_jobs_per_tenant,
        devices_offered=settings.worker_devices,
    )
    if job is None:
        return None
    claimed = ClaimedJob(job, worker_id, settings, sessions)
    if job.cancel_requested:
        return claimed.finish("cancelled", "Cancelled before training started.")
    try:
        config = prepare(claimed)
        result = train_job(claimed, config, stop_event)
    except JobFailure as failure:
        return claimed.fail(failure)
    if result is None:  # another worker owns the job now; it records the outcome
        return None
    return record(claimed, result, stop_event, on_requeue)


# ---- prepare: inputs checked, folder made, configuration resolved ------------------------------------------------


def prepare(claimed: ClaimedJob):
    """The job's TrainConfig with this host's paths, or JobFailure when the job cannot run here."""
    dataset, eval_dataset = _datasets(claimed)
    try:
        claimed.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # raised here, it would escape run_job and leave the job `running` until swept
        raise JobFailure(
            "artifact_write_failed",
            f"Cannot create the job's folder {claimed.output_dir} "
            f"({exc.strerror or exc}): check that the data folder is writable and has free space.",
        ) from exc
    return _train_config(claimed, dataset, eval_dataset)


def _datasets(claimed: ClaimedJob) -> tuple[Dataset, Dataset | None]:
    job, settings = claimed.job, claimed.settings
    with claimed.sessions() as session:
        dataset = session.get(Dataset, job.dataset_id)
        claimed.organization = session.get(Tenant, job.tenant_id).name
        eval_dataset = session.get(Dataset, job.eval_dataset_id) if job.eval_dataset_id else None
    if dataset is None or (job.eval_dataset_id and eval_dataset is None):
        missing = job.dataset_id if dataset is None else job.eval_dataset_id
        raise JobFailure("dataset_missing", f"Dataset {missing} no longer exists.", param="dataset_id")
    for record in (dataset, eval_dataset):
        if record is not None and not settings.resolve(record.storage_path).is_file():
            raise JobFailure(
                "dataset_missing",
                f"The file of dataset {record.id} is missing from the data folder "
                f"({settings.data_dir}); is the artifact volume shared with this worker?",
                param="dataset_id",
            )
    return dataset, eval_dataset


def _train_config(claimed: ClaimedJob, dataset: Dataset, eval_dataset: Dataset | None):
    from uds.config import ConfigError, TrainConfig

    settings = claimed.settings
    try:
        return TrainConfig.from_dict(
            {
                **claimed.job.config,
                "dataset_path": str(settings.resolve(dataset.storage_path)),
                "eval_dataset_path": str(settings.resolve(eval_dataset.storage_path)) if eval_dataset else None,
                "output_dir": str(claimed.output_dir),
                "models_dir": str(settings.models_dir),
                "device": settings.device,
            }
        )
    except ConfigError as exc:  # a config stored by an older version that this one rejects
        raise JobFailure("invalid_config", f"{exc.param}: {exc.message}", param=exc.param) from exc


# ---- train: the loop, under the job's lease, reporting into the database ----------------------------------------


def train_job(claimed: ClaimedJob, config, stop_event: threading.Event | None):
    """Train the job here, or on several devices (worker/devices.py). Returns the result, or None when the job was
    taken from us meanwhile."""
    if config.devices > 1:
        return train_on_devices(claimed, config, stop_event)
    return train_in_process(claimed, config, stop_event)


def train_on_devices(claimed: ClaimedJob, config, stop_event: threading.Event | None):
    """The job's processes under torchrun, this worker holding the lease meanwhile; rank 0's outcome."""
    from uds.trainer import TrainResult
    from worker import devices

    folder = devices.run_folder(claimed.output_dir)
    run_path = devices.write_run(folder, claimed.id, claimed.worker_id, claimed.settings, config)
    lease = _job_lease(claimed).start()
    try:
        outcome = devices.launch(folder, run_path, config, stop_event)
    except devices.DevicesFailed as exc:
        raise JobFailure(
            "device_process_failed",
            f"Training stopped: {exc}. Its checkpoints are kept; the job resumes from the newest when run again.",
        ) from exc
    finally:
        lease.stop()
    if "failure" in outcome:
        raise JobFailure(outcome["failure"]["code"], outcome["failure"]["message"])
    if outcome.get("lost") or lease.lost:
        return None
    return TrainResult(**outcome["result"])


def train_in_process(claimed: ClaimedJob, config, stop_event: threading.Event | None):
    """Run uds.trainer.train in this process (rank 0 of a multi-device job too). Returns its result, or None when
    the job was taken from us meanwhile."""
    from uds.trainer import TrainingError, train

    try:
        with _reporting(claimed, config, stop_event) as logger:
            limited = TimeLimitedLogger(logger, claimed.job.started_at, claimed.settings.max_job_seconds)
            mirror = mirror_metrics(
                limited,
                claimed.job.integrations,
                claimed.id,
                str(claimed.output_dir),
                allow_private=claimed.settings.private_targets_allowed,
            )
            with mirror as reporter:
                result = train(config, reporter, resume=True, allowed_models=claimed.settings.models)
    except TrainingError as exc:
        raise JobFailure(exc.code, exc.message) from exc
    except Exception as exc:
        log.exception("job %s crashed", claimed.id)  # the traceback: the server log only, never the tenant's events
        raise JobFailure(
            "internal_error",
            f"Training stopped with an unexpected error: {type(exc).__name__}: {exc} (details in the worker's log).",
        ) from exc
    if limited.expired and result.status == "cancelled" and not logger.lost:
        raise JobFailure(
            "time_limit_exceeded",
            f"The job ran longer than this deployment's limit of "
            f"{claimed.settings.max_job_seconds:g} s (UDS_MAX_JOB_SECONDS) and was stopped after "
            f"{result.steps_done} of {result.total_steps} steps; its checkpoints are kept.",
        )
    return None if logger.lost else result


def _job_lease(claimed: ClaimedJob, shutdown: threading.Event | None = None) -> JobLease:
    return JobLease(
        claimed.sessions,
        claimed.id,
        claimed.worker_id,
        heartbeat_seconds=claimed.settings.heartbeat_seconds,
        shutdown=shutdown,
    )


@contextlib.contextmanager
def _reporting(claimed: ClaimedJob, config, stop_event: threading.Event | None):
    """The job's lease and its DbLogger; on the way out the metric writer drains before the outcome is recorded."""
    settings = claimed.settings
    lease = _job_lease(claimed, stop_event).start()
    data_dir = str(settings.data_dir)
    logger = DbLogger(
        claimed.sessions,
        claimed.id,
        claimed.worker_id,
        lease=lease,
        resume_step=resume_step(claimed.output_dir),
        flush_steps=settings.metrics_flush_steps,
        flush_seconds=settings.metrics_flush_seconds,
        checkpoint_every=config.checkpoint_every,
        relative_path=lambda p: os.path.relpath(p, data_dir),
    )
    try:
        yield logger
    finally:
        logger.close()
        lease.stop()


# ---- record: the outcome on the job row ------------------------------------------------------------------------


def record(
    claimed: ClaimedJob, result, stop_event: threading.Event | None, on_requeue: Callable[[str], None] | None
) -> str | None:
    if result.status != "cancelled":
        return _record_success(claimed, result)
    if stop_event is not None and stop_event.is_set():  # not the user's cancel: this process is shutting down
        return _requeue_for_shutdown(claimed, on_requeue)
    return claimed.finish("cancelled", f"Cancelled after {result.steps_done} of {result.total_steps} steps.")


def _requeue_for_shutdown(claimed: ClaimedJob, on_requeue: Callable[[str], None] | None) -> str | None:
    step = resume_step(claimed.output_dir)
    message = f"Worker shutting down; job re-queued, resumes from step {step}."
    # Unowned again: the next claim resumes it from its checkpoints.
    if not _transition(
        claimed.sessions, claimed.id, claimed.worker_id, "queued", message, worker_id=None, heartbeat_at=None
    ):
        return None
    if on_requeue is not None:
        on_requeue(claimed.id)
    return "queued"


def _record_success(claimed: ClaimedJob, result) -> str | None:
    from uds.model_card import finalize_adapter
    from worker.artifacts import ARCHIVE_NAME, package_adapter
    from worker.job_card import card_info

    archive = claimed.output_dir / ARCHIVE_NAME
    try:
        # Before packaging: adapter_config.json names the model the user asked for, and README is its model card.
        finalize_adapter(
            result.adapter_dir, card_info(claimed.sessions, claimed.job, claimed.organization, result.steps_done)
        )
        size, digest = package_adapter(result.adapter_dir, archive)
    except OSError as exc:
        return claimed.fail(JobFailure("artifact_write_failed", f"Could not write the adapter archive: {exc}"))
    job = claimed.job
    return claimed.finish(
        "succeeded",
        f"Succeeded: {result.steps_done} steps; adapter {size} bytes, sha256 {digest[:12]}...",
        adapter_path=os.path.relpath(archive, claimed.settings.data_dir),
        adapter_bytes=size,
        adapter_sha256=digest,
        fine_tuned_model=fine_tuned_model_name(job.model, claimed.organization, job.suffix, job.id),
        current_step=result.steps_done,
        **measured_speed(result.summary),
    )


def measured_speed(summary: dict) -> dict:
    """The succeeded run's rates and device (the job row's columns that estimates of later jobs read)."""
    from uds.estimate import measured_rates

    scoring_rate, training_rate = measured_rates(
        int(summary.get("examples_scored") or 0),
        summary.get("time_scoring"),
        int(summary.get("tokens_trained") or 0),
        summary.get("time_training"),
    )
    return {"scoring_rate": scoring_rate, "training_rate": training_rate, "device_kind": summary.get("device_kind")}

"""What a deployment keeps on disk: leftovers of crashes, finished jobs' intermediate state, per-tenant quotas.

- Abandoned uploads (`tmp/upload-*.part`): a live upload holds an advisory lock on its file (api/uploads.py),
  so at start-up every unlocked one is a crash's leftover and goes at once, even on a volume other API processes
  share.
- Abandoned checkpoint writes (`jobs/<id>/checkpoints/step-N.tmp-<pid>`, written then renamed by uds/checkpoint.py):
  removed for jobs that are not running; in the embedded mode every writer is on this host, so also for a
  writer pid that no longer exists.
- Retention (UDS_CHECKPOINT_RETENTION=final): once a job has succeeded its checkpoints (optimizer state, UDS
  buffer: up to gigabytes) are only good for resuming, which it will never do; they are deleted, the final
  adapter (`adapter/` and its archive) stays, and the checkpoint records stay with `available: false`.
- Quota (UDS_TENANT_STORAGE_BYTES): everything a tenant causes to be stored. Its datasets, every file under its
  jobs' folders as they are on disk (adapters and their archives, checkpoints, exports of any kind, tracker runs:
  counted by walking `jobs/<id>/`, so a new kind of artifact is counted without a change here), the try-it
  requests and answers stored in the database, and what unfinished work may still write: the checkpoint state of
  unfinished jobs, the size of the model for unfinished exports. An upload, a job, an export or a try-it request
  that would go over it is refused with 400 `storage_quota_exceeded`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from pathlib import Path

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.models import ACTIVE_STATUSES, Dataset, Job, JobTask
from api.services.models import find_base_model
from api.settings import Settings

log = logging.getLogger(__name__)

_TMP_CHECKPOINT = re.compile(r"^step-\d+\.tmp-(\d+)$")


def remove_abandoned_uploads(settings: Settings) -> int:
    removed = 0
    for part in settings.tmp_dir.glob("upload-*.part"):
        try:
            with open(part, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a live upload holds it
                part.unlink()
                removed += 1
        except (BlockingIOError, FileNotFoundError):
            continue
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_checkpoint_writes(settings: Settings, session: Session) -> int:
    running = set(session.scalars(select(Job.id).where(Job.status == "running")))
    removed = 0
    for folder in settings.jobs_dir.glob("*/checkpoints/step-*.tmp-*"):
        match = _TMP_CHECKPOINT.match(folder.name)
        if not match or not folder.is_dir():
            continue
        job_id = folder.parent.parent.name
        writer_gone = settings.embedded and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1)))
        if job_id not in running or writer_gone:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def prune_finished_checkpoints(settings: Settings, session: Session) -> int:
    """Apply UDS_CHECKPOINT_RETENTION to succeeded jobs; returns how many jobs' checkpoints were deleted."""
    if settings.checkpoint_retention == "all":
        return 0
    pruned = 0
    for job_id in session.scalars(select(Job.id).where(Job.status == "succeeded")):
        folder = settings.job_dir(job_id) / "checkpoints"
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            pruned += 1
    return pruned


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed; files vanishing meanwhile skipped)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def model_bytes(settings: Settings, model: str) -> int:
    """What an export of `model` may write: its parameters at 4 bytes each (float32, the widest stored dtype we
    write), 0 where the model's facts are not known yet."""
    found = find_base_model(settings, model)
    return 4 * (found.facts.parameters or 0) if found is not None else 0


def tenant_usage(settings: Settings, session: Session, tenant_id: int, reserved_per_job) -> int:
    """Bytes counted against the tenant's quota (see the module's docstring); `reserved_per_job(config)` is the
    checkpoint state an unfinished job may keep."""
    datasets = session.scalar(select(func.coalesce(func.sum(Dataset.bytes), 0)).where(Dataset.tenant_id == tenant_id))
    jobs = session.execute(select(Job.id, Job.status, Job.config).where(Job.tenant_id == tenant_id)).all()
    on_disk = 0
    for job_id, status, config in jobs:
        stored = folder_bytes(settings.job_dir(job_id))
        # A running job's checkpoints so far are part of what it reserved, not on top of it.
        on_disk += max(stored, reserved_per_job(config or {})) if status in ACTIVE_STATUSES else stored
    models = {job_id: (config or {}).get("model", "") for job_id, _, config in jobs}
    unfinished_exports = session.scalars(
        select(JobTask.job_id).where(
            JobTask.tenant_id == tenant_id, JobTask.kind == "export", JobTask.status.in_(("queued", "running"))
        )
    )
    exports = sum(model_bytes(settings, models.get(job_id, "")) for job_id in unfinished_exports)
    # Try-it requests and answers live in the database, not the data folder: their JSON, as stored.
    stored_json = func.coalesce(func.length(cast(JobTask.params, String)), 0) + func.coalesce(
        func.length(cast(JobTask.result, String)), 0
    )
    generations = session.scalar(
        select(func.coalesce(func.sum(stored_json), 0)).where(
            JobTask.tenant_id == tenant_id, JobTask.kind == "generate"
        )
    )
    # coalesce(sum, 0) is never NULL; `or 0` only tells the type checker so.
    return int(datasets or 0) + on_disk + exports + int(generations or 0)


def check_quota(
    settings: Settings, session: Session, tenant_id: int, adding: int, what: str, param: str, reserved_per_job
) -> None:
    """400 `storage_quota_exceeded` when `adding` more bytes would take the tenant over UDS_TENANT_STORAGE_BYTES."""
    if not settings.tenant_storage_bytes:
        return
    used = tenant_usage(settings, session, tenant_id, reserved_per_job)
    if used + adding > settings.tenant_storage_bytes:
        raise APIError(
            400,
            f"Storage quota exceeded: this tenant uses {used} bytes, {what} needs {adding} more, and "
            f"the quota is {settings.tenant_storage_bytes} (UDS_TENANT_STORAGE_BYTES). Delete datasets or "
            "finished jobs' files first.",
            code="storage_quota_exceeded",
            param=param,
        )

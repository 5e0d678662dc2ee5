"""Short tasks on a finished job (a merged or GGUF export, a try-it generation), given only the task's id.

The Celery task `uds.run_task` (worker/tasks.py) and, in the embedded mode, `TaskWorker` (a thread next to the
training thread, so a try-it answer does not wait for a long training run) both call `run_task`. The claim is one
conditional UPDATE (queued -> running): a redelivered message finds the task taken and does nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, update

from api.db import migrate, session_factory
from api.models import Job, JobTask, utcnow
from api.settings import Settings, get_settings
from worker.identity import worker_id as this_worker
from worker.task_recovery import recover_tasks

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.25


class TaskFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class TaskStopped(Exception):
    """The task stopped part way, its partial files removed: cancelled by the user, or this process is stopping."""


def run_task(
    task_id: str,
    worker_id: str | None = None,
    settings: Settings | None = None,
    stop_event: threading.Event | None = None,
) -> str | None:
    """Run task `task_id`; returns its final status, or None when it was not ours to run.

    `stop_event`: set when this process shuts down; a generation stops at its next token and goes back to `queued`
    (its partial answers are not the user's result), for the next start to run again; so does a GGUF export,
    stopped between tensors with its partial file removed."""
    settings = settings or get_settings()
    sessions = session_factory(settings.sqlalchemy_url)
    task, job = _claim(sessions, task_id, worker_id or this_worker())
    if task is None:
        return None
    try:
        values = RUNNERS[task.kind](settings, sessions, task, job, stop_event)
        if stop_event is not None and stop_event.is_set() and not _cancel_requested(sessions, task_id):
            return _requeue(sessions, task_id)
        status = "cancelled" if _cancel_requested(sessions, task_id) and task.kind == "generate" else "succeeded"
    except TaskStopped:
        if not _cancel_requested(sessions, task_id):  # stopped by this process's shutdown: the next start runs it
            return _requeue(sessions, task_id)
        status, values = "cancelled", {}
    except TaskFailure as failure:
        status, values = "failed", {"error_code": failure.code, "error_message": failure.message}
    except Exception as exc:  # noqa: BLE001 - recorded on the task; the worker keeps serving others
        log.exception("task %s crashed", task_id)
        status, values = "failed", {"error_code": "internal_error", "error_message": f"{type(exc).__name__}: {exc}"}
    with sessions.begin() as session:
        session.execute(
            update(JobTask)
            .where(JobTask.id == task_id, JobTask.status == "running")
            .values(status=status, finished_at=utcnow(), **values)
        )
    return status


def _claim(sessions, task_id: str, worker_id: str):
    with sessions.begin() as session:
        claimed = session.execute(
            update(JobTask)
            .where(JobTask.id == task_id, JobTask.status == "queued")
            .values(status="running", worker_id=worker_id, started_at=utcnow(), attempts=JobTask.attempts + 1)
        ).rowcount
        if claimed != 1:
            return None, None
        task = session.get(JobTask, task_id)
        if task.cancel_requested:
            task.status, task.finished_at = "cancelled", utcnow()
            return None, None
        return task, session.get(Job, task.job_id)


def _requeue(sessions, task_id: str) -> str | None:
    with sessions.begin() as session:
        matched = session.execute(
            update(JobTask)
            .where(JobTask.id == task_id, JobTask.status == "running")
            .values(status="queued", worker_id=None, started_at=None, result=None)
        ).rowcount
    return "queued" if matched else None


def _cancel_requested(sessions, task_id: str) -> bool:
    with sessions() as session:
        return bool(session.scalar(select(JobTask.cancel_requested).where(JobTask.id == task_id)))


def _base_and_adapter(settings: Settings, job: Job) -> tuple[str, Path]:
    from uds.models import ModelLoadError, ModelNotAllowed, resolve_model

    adapter = settings.job_dir(job.id) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise TaskFailure("adapter_missing", f"The adapter folder of job {job.id} is missing from the data folder.")
    try:
        base = resolve_model(
            job.config.get("model", job.model), allowed=settings.models, models_dir=settings.models_dir
        )
    except (ModelNotAllowed, ModelLoadError) as exc:
        raise TaskFailure("model_unavailable", f"The base model {job.model!r} is no longer available: {exc}") from exc
    return base, adapter


# ---- the kinds ----------------------------------------------------------------------------------------------


def export_task(settings: Settings, sessions, task: JobTask, job: Job, stop_event=None) -> dict:
    """The export as one archive next to the adapter's: jobs/<job>/exports/<task>.tar.gz (members merged/) or
    <task>.tar (gguf/<job>-<quantization>.gguf and gguf/Modelfile). Nothing is left when it fails or stops.
    A merge cannot stop half way; a GGUF file stops between tensors (cancel, or shutdown: re-queued)."""
    from uds.export import export_merged
    from uds.gguf_export import ExportStopped, export_gguf
    from uds.gguf_support import GGUFUnsupported
    from worker.artifacts import package_folder

    kind = task.params.get("kind", "merged")
    base, adapter = _base_and_adapter(settings, job)
    folder = settings.job_dir(job.id) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    built = folder / task.id
    archive = folder / (f"{task.id}.tar" if kind == "gguf" else f"{task.id}.tar.gz")
    should_stop = _cancel_check(sessions, task.id, stop_event)
    try:
        if kind == "gguf":
            quantization = task.params.get("quantization", "f16")
            export_gguf(base, str(adapter), built, quantization, name=job.id, should_stop=should_stop)
        else:
            export_merged(base, str(adapter), built)
        size, digest = package_folder(built, archive, kind, compress=kind != "gguf")
        if _cancel_requested(sessions, task.id):  # cancelled while the export was written: no file, as promised
            archive.unlink(missing_ok=True)
            raise TaskStopped()
    except ExportStopped as exc:
        raise TaskStopped() from exc
    except GGUFUnsupported as exc:
        raise TaskFailure("unsupported_model", f"{job.model}: {exc}") from exc
    except OSError as exc:
        raise TaskFailure("artifact_write_failed", f"Could not write the {kind} export: {exc}") from exc
    finally:
        shutil.rmtree(built, ignore_errors=True)  # the archive is the artifact; the folder would double the disk
    return {"path": os.path.relpath(archive, settings.data_dir), "bytes": size, "sha256": digest}


def generate_task(settings: Settings, sessions, task: JobTask, job: Job, stop_event=None) -> dict:
    from uds.export import load_with_adapter
    from uds.tryit import PromptTooLong, generate_pair

    base, adapter = _base_and_adapter(settings, job)
    model, tokenizer = load_with_adapter(base, str(adapter), device=settings.device)
    params = task.params
    try:
        result = generate_pair(
            model,
            tokenizer,
            params["messages"],
            max_new_tokens=params["max_new_tokens"],
            temperature=params["temperature"],
            seed=params.get("seed", 0),
            max_seconds=settings.generate_max_seconds,
            should_stop=_cancel_check(sessions, task.id, stop_event),
        )
    except PromptTooLong as exc:
        raise TaskFailure("prompt_too_long", f"max_new_tokens leaves no room for the prompt: {exc}.") from exc
    return {"result": result}


def _cancel_check(sessions, task_id: str, stop_event: threading.Event | None = None):
    """should_stop for generation: reads the cancel flag at most every CANCEL_POLL_SECONDS (it is asked per token);
    a shutting-down process stops at once."""
    state = {"at": 0.0, "stop": False}

    def should_stop() -> bool:
        if stop_event is not None and stop_event.is_set():
            return True
        if not state["stop"] and time.monotonic() - state["at"] >= CANCEL_POLL_SECONDS:
            state["at"], state["stop"] = time.monotonic(), _cancel_requested(sessions, task_id)
        return state["stop"]

    return should_stop


RUNNERS = {"export": export_task, "generate": generate_task}


# ---- the embedded mode ----------------------------------------------------------------------------------------


class TaskWorker(threading.Thread):
    """`uds serve` without a broker: runs queued tasks in up to `settings.task_slots` threads, at most one per
    tenant, tenants in turns (the least recently started first, worker/fairness.py), so one tenant's generation
    never holds up another's; woken by the dispatcher's task event and whenever a slot frees."""

    def __init__(self, settings: Settings, wakeup: threading.Event | None = None):
        super().__init__(name="uds-task-worker", daemon=True)
        self.settings = settings
        self.wakeup = wakeup or threading.Event()
        self.stopping = threading.Event()
        self.running: dict[str, int] = {}  # task id -> tenant id, of the tasks this thread has started
        self.threads: list[threading.Thread] = []

    def next_task(self) -> tuple[str, int] | None:
        """(task id, tenant id): the oldest queued task of the next tenant in turn that has no task running here."""
        from worker.fairness import QueuedJob, next_job_order

        busy = set(self.running.values())
        with session_factory(self.settings.sqlalchemy_url)() as session:
            queued = [
                QueuedJob(*row)
                for row in session.execute(
                    select(JobTask.id, JobTask.tenant_id, JobTask.created_at).where(
                        JobTask.status == "queued", JobTask.tenant_id.not_in(busy)
                    )
                )
            ]
            last_started = dict(
                session.execute(
                    select(JobTask.tenant_id, func.max(JobTask.started_at))
                    .where(JobTask.tenant_id.in_({q.tenant_id for q in queued}))
                    .group_by(JobTask.tenant_id)
                ).all()
            )
        order = next_job_order(queued, last_started)
        tenant = {q.id: q.tenant_id for q in queued}
        return (order[0], tenant[order[0]]) if order else None

    def run(self) -> None:
        migrate(self.settings.sqlalchemy_url)
        last_sweep = float("-inf")
        while not self.stopping.is_set():
            try:
                if time.monotonic() - last_sweep > self.settings.stale_after_seconds / 2:
                    recover_tasks(self.settings)  # tasks a previous process left running (worker/task_recovery.py)
                    last_sweep = time.monotonic()
                picked = self.next_task() if len(self.running) < self.settings.task_slots else None
                if picked is None:
                    self.wakeup.wait(self.settings.embedded_poll_seconds)
                    self.wakeup.clear()
                    continue
                self.running[picked[0]] = picked[1]
                thread = threading.Thread(target=self._run_one, args=(picked[0],), name=f"uds-task-{picked[0]}")
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
                thread.start()
            except Exception:
                log.exception("task worker loop error")
                self.stopping.wait(self.settings.embedded_poll_seconds)

    def _run_one(self, task_id: str) -> None:
        try:
            log.info("task %s: %s", task_id, run_task(task_id, this_worker(), self.settings, self.stopping))
        except Exception:
            log.exception("task %s: worker error", task_id)
        finally:
            self.running.pop(task_id, None)
            self.wakeup.set()  # a slot is free

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.join(timeout)
        for thread in list(self.threads):
            thread.join(timeout)

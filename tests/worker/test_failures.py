"""Resource failures end the job `failed` with a message a person can act on, and the same worker process then
runs the next job to success: a full disk (a tiny tmpfs), a read-only artifact folder (a read-only mount: root
ignores chmod), a model that fails to load, and out-of-memory at the device edge.

SQLite only (the failure paths do not depend on the database); each case trains or loads uds-tiny for real.
"""

from __future__ import annotations

import contextlib
import subprocess

import pytest
from sqlalchemy import select

from api.models import Job, JobEvent
from tests.utils.factories import job_row
from tests.utils.service import migrated_sqlite
from worker.runner import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):  # these tests train for real: SQLite only
    return migrated_sqlite(tmp_path_factory, "failures")


@contextlib.contextmanager
def mounted(folder, options: str):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_failed(sessions, job_id, code: str, *words: str) -> Job:
    job = job_row(sessions, job_id)
    assert (job.status, job.error_code) == ("failed", code), (job.status, job.error_code, job.error_message)
    assert job.finished_at is not None and job.worker_id is not None
    for word in words:
        assert word.lower() in job.error_message.lower(), job.error_message
    with sessions() as session:
        last = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc())).first()
    assert last.level == "error" and last.data["status"] == "failed"
    return job


def the_next_job_succeeds(sessions, make_job, settings) -> None:
    job_id = make_job(max_steps=2, checkpoint_every=2)
    assert run_job(job_id, "me:1:cafe", settings) == "succeeded"


def test_disk_full_fails_the_job_and_the_worker_runs_the_next(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=4, checkpoint_every=1)
    with mounted(settings.jobs_dir, "size=48k"):  # room for folders, not for a checkpoint
        assert run_job(job_id, "me:1:cafe", settings) == "failed"
    job = assert_failed(sessions, job_id, "artifact_write_failed", "disk space")
    assert "No space left on device" in job.error_message
    the_next_job_succeeds(sessions, make_job, settings)


def test_read_only_artifact_folder_fails_the_job_and_the_worker_runs_the_next(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=2)
    with mounted(settings.jobs_dir, "ro,size=1m"):
        assert run_job(job_id, "me:1:cafe", settings) == "failed"
    job = assert_failed(sessions, job_id, "artifact_write_failed", "writable")
    assert str(settings.jobs_dir) in job.error_message  # names the folder to fix
    the_next_job_succeeds(sessions, make_job, settings)


def test_a_model_that_fails_to_load(sessions, make_job, tiny_in_data_dir, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number"')
    settings = tiny_in_data_dir.model_copy(update={"allowed_models": [str(broken)]})
    job_id = make_job(model=str(broken), max_steps=2)
    assert run_job(job_id, "me:1:cafe", settings) == "failed"
    assert_failed(sessions, job_id, "model_load_failed", str(broken), "could not be loaded")
    the_next_job_succeeds(sessions, make_job, settings)


def test_out_of_memory_at_the_device_edge(sessions, make_job, tiny_in_data_dir, monkeypatch):
    import torch

    import uds.trainer

    settings = tiny_in_data_dir
    real_step = uds.trainer._step

    def oom(run, step):
        if step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(run, step)

    monkeypatch.setattr(uds.trainer, "_step", oom)
    job_id = make_job(max_steps=4, checkpoint_every=1)
    assert run_job(job_id, "me:1:cafe", settings) == "failed"
    assert_failed(sessions, job_id, "out_of_memory", "micro_batch_size")
    assert job_row(sessions, job_id).current_step == 1  # the step before is kept, resumable from its checkpoint
    monkeypatch.setattr(uds.trainer, "_step", real_step)
    the_next_job_succeeds(sessions, make_job, settings)

"""A GGUF export run by the worker on a trained job: one .tar with the file and its Modelfile, read back with the
adapter's logits; and when it cannot finish (cancelled part way, a full disk, the process stopping) no file is left
and the export says why."""

from __future__ import annotations

import hashlib
import tarfile

import pytest
import torch
from sqlalchemy import update

from api.models import JobTask
from api.services import job_tasks
from tests.utils.gguf_models import build_gguf_ready_model
from worker.job_tasks import run_task

pytestmark = pytest.mark.slow
MODEL = "acme-smol"
GGUF = {"kind": "gguf", "quantization": "f16"}


class QueueStub:
    def enqueue_task(self, task_id: str) -> None:  # the test runs the task itself, in this thread
        pass


@pytest.fixture(scope="module")
def smol_folder(tmp_path_factory):
    return build_gguf_ready_model(tmp_path_factory.mktemp("user-models") / "smol", "llama")


@pytest.fixture
def finished_job(train_on, smol_folder):
    return train_on(MODEL, smol_folder)


def new_export(sessions, job, params=GGUF) -> str:
    with sessions() as session:
        return job_tasks.create_task(session, QueueStub(), session.merge(job), "export", dict(params)).id


def exports_folder_files(settings, job) -> list[str]:
    return sorted(p.name for p in (settings.job_dir(job.id) / "exports").iterdir())


def task_row(sessions, task_id) -> JobTask:
    with sessions() as session:
        return session.get(JobTask, task_id)


def test_the_gguf_export_is_one_tar_read_back_with_the_adapters_logits(
    settings, sessions, finished_job, smol_folder, tmp_path
):
    from transformers import AutoModelForCausalLM

    from uds.export import load_with_adapter

    task_id = new_export(sessions, finished_job)
    assert run_task(task_id, "w:gguf", settings) == "succeeded"
    task = task_row(sessions, task_id)
    archive = settings.data_dir / task.path
    assert archive.name == f"{task_id}.tar" and exports_folder_files(settings, finished_job) == [archive.name]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == task.sha256 and archive.stat().st_size == task.bytes
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["gguf", "gguf/Modelfile", f"gguf/{finished_job.id}-f16.gguf"]
        tar.extractall(tmp_path, filter="data")
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{finished_job.id}-f16.gguf\n")
    back = AutoModelForCausalLM.from_pretrained(
        tmp_path / "gguf", gguf_file=f"{finished_job.id}-f16.gguf", dtype=torch.float32
    ).eval()
    unmerged, tokenizer = load_with_adapter(
        str(smol_folder), str(settings.job_dir(finished_job.id) / "adapter"), dtype=torch.float32
    )
    ids = tokenizer(["Reverse: abcdef -> ", "Copy: hello world"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, actual = unmerged(**ids).logits, back(**ids).logits
    assert (expected - actual).abs().max() <= 2e-3


def test_a_cancel_while_writing_leaves_no_file(settings, sessions, finished_job, monkeypatch):
    import worker.job_tasks as module

    real_check = module._cancel_check

    def cancel_at_the_first_tensor(task_sessions, task_id, *stop_event):
        check = real_check(task_sessions, task_id, *stop_event)

        def should_stop():  # the cancel arrives through the row, as POST /exports/{id}/cancel sets it
            with sessions() as session:
                job_tasks.cancel_task(session, session.get(JobTask, task_id))
            return check()

        return should_stop

    monkeypatch.setattr(module, "_cancel_check", cancel_at_the_first_tensor)
    task_id = new_export(sessions, finished_job)
    assert run_task(task_id, "w:gguf", settings) == "cancelled"
    assert task_row(sessions, task_id).path is None
    assert exports_folder_files(settings, finished_job) == []


def test_a_full_disk_fails_the_export_with_the_reason_and_no_file(settings, sessions, finished_job, monkeypatch):
    import gguf

    def disk_full(self, tensor, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", disk_full)
    task_id = new_export(sessions, finished_job, {"kind": "gguf", "quantization": "q8_0"})
    assert run_task(task_id, "w:gguf", settings) == "failed"
    task = task_row(sessions, task_id)
    assert task.error_code == "artifact_write_failed" and "No space left on device" in task.error_message
    assert exports_folder_files(settings, finished_job) == []


def test_a_stopping_process_puts_the_export_back_in_the_queue_and_leaves_no_file(settings, sessions, finished_job):
    import threading

    stopping = threading.Event()
    stopping.set()  # the process is shutting down: the export stops before its first tensor
    task_id = new_export(sessions, finished_job)
    assert run_task(task_id, "w:gguf", settings, stop_event=stopping) == "queued"
    assert exports_folder_files(settings, finished_job) == []
    with sessions.begin() as session:  # nothing left queued for other tests' sweeps
        session.execute(update(JobTask).where(JobTask.id == task_id).values(status="cancelled"))

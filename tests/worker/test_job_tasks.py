"""A registered Llama-style model trained through the worker, then the short tasks on the finished job: the adapter
names the model the user asked for and carries a model card, the merged export's logits equal base + adapter's,
and try-it answers with and without the adapter, bounded and cancellable through the task's row."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile

import pytest
import torch
from sqlalchemy import update

from api.models import JobTask
from api.services import job_tasks
from tests.utils.models import build_model_folder
from worker.job_tasks import run_task

pytestmark = pytest.mark.slow
MODEL = "acme-llama"


class QueueStub:
    def enqueue_task(self, task_id: str) -> None:  # the test runs the task itself, in this thread
        pass


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return build_model_folder(tmp_path_factory.mktemp("user-models") / "llama", "llama", tied=False)


@pytest.fixture
def finished_job(train_on, llama_folder):
    return train_on(MODEL, llama_folder)


def new_task(sessions, job, kind, params) -> str:
    with sessions() as session:
        return job_tasks.create_task(session, QueueStub(), session.merge(job), kind, params).id


def test_the_adapter_names_the_users_model_and_has_a_model_card(settings, finished_job):
    adapter = settings.job_dir(finished_job.id) / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == MODEL
    card = (adapter / "README.md").read_text()
    for fact in (
        f"base_model: {MODEL}",
        "`d.jsonl`, 24 examples",
        "| budget | 0.25",
        "| optimizer steps | 6",
        "PeftModel.from_pretrained",
        "r=4, alpha=8",
    ):
        assert fact in card, fact
    assert re.search(r"final training loss \| \d+\.\d{4} \|", card)
    with tarfile.open(settings.data_dir / finished_job.adapter_path) as tar:  # the download carries both
        assert "adapter/README.md" in tar.getnames()


def test_the_merged_export_has_the_logits_of_base_plus_adapter(
    settings, sessions, finished_job, llama_folder, tmp_path
):
    from transformers import AutoModelForCausalLM

    from uds.export import load_with_adapter

    task_id = new_task(sessions, finished_job, "export", {"kind": "merged"})
    assert run_task(task_id, "w:tasks", settings) == "succeeded"
    assert run_task(task_id, "w:tasks", settings) is None  # a redelivered message finds it done
    with sessions() as session:
        task = session.get(JobTask, task_id)
    archive = settings.data_dir / task.path
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == task.sha256 and archive.stat().st_size == task.bytes
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert (tmp_path / "merged" / "model.safetensors").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()
    assert f"base_model: {MODEL}" in (tmp_path / "merged" / "README.md").read_text()

    unmerged, tokenizer = load_with_adapter(
        str(llama_folder), str(settings.job_dir(finished_job.id) / "adapter"), dtype=torch.float32
    )
    ids = tokenizer(["Reverse: abcdef -> ", "Copy: hello world"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = unmerged(**ids).logits
        actual = merged(**ids).logits
        with unmerged.disable_adapter():
            base = unmerged(**ids).logits
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the model, so the comparison means something
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0), (actual - expected).abs().max()


def test_try_it_answers_with_and_without_the_adapter(settings, sessions, finished_job, llama_folder):
    from uds.models import load_model_and_tokenizer
    from uds.tryit import _answer, prompt_ids

    messages = [{"role": "user", "content": "Reverse: abc"}]
    task_id = new_task(
        sessions, finished_job, "generate", {"messages": messages, "max_new_tokens": 12, "temperature": 0.0, "seed": 0}
    )
    assert run_task(task_id, "w:tasks", settings) == "succeeded"
    with sessions() as session:
        result = session.get(JobTask, task_id).result
    assert result["fine_tuned"]["tokens"] <= 12 and result["base"]["tokens"] <= 12
    # The side-by-side base answer is exactly the base model's own (greedy) answer.
    base, tokenizer = load_model_and_tokenizer(str(llama_folder))
    alone = _answer(base, tokenizer, prompt_ids(tokenizer, messages), 12, 0.0, 0, 60.0, lambda: False)
    assert result["base"]["text"] == alone["text"]


def test_try_it_stops_when_cancelled(settings, sessions, finished_job, monkeypatch):
    import worker.job_tasks as module

    params = {"messages": [{"role": "user", "content": "Copy: x"}], "max_new_tokens": 200, "temperature": 0.0}
    queued = new_task(sessions, finished_job, "generate", params)
    with sessions() as session:  # cancelled while queued: never runs
        job_tasks.cancel_task(session, session.get(JobTask, queued))
    assert run_task(queued, "w:tasks", settings) is None

    # Cancelled while generating: the cancel arrives through the row (as POST .../cancel sets it) at the first token.
    real_check = module._cancel_check

    def cancel_at_first_token(task_sessions, task_id, *stop_event):
        check = real_check(task_sessions, task_id, *stop_event)

        def should_stop():
            with sessions() as session:
                job_tasks.cancel_task(session, session.get(JobTask, task_id))
            return check()

        return should_stop

    monkeypatch.setattr(module, "_cancel_check", cancel_at_first_token)
    running = new_task(sessions, finished_job, "generate", params)
    assert run_task(running, "w:tasks", settings) == "cancelled"
    with sessions() as session:
        task = session.get(JobTask, running)
    assert task.result["fine_tuned"]["tokens"] < 200 and task.result["base"]["tokens"] < 200


def test_a_task_on_a_job_whose_model_was_removed_fails_with_a_reason(settings, sessions, finished_job):
    from uds.registry import remove_registration

    remove_registration(settings.models_dir, MODEL)
    task_id = new_task(sessions, finished_job, "export", {"kind": "merged"})
    assert run_task(task_id, "w:tasks", settings) == "failed"
    with sessions() as session:
        task = session.get(JobTask, task_id)
    assert task.error_code == "model_unavailable" and MODEL in task.error_message
    with sessions.begin() as session:  # nothing left queued for other tests' sweeps
        session.execute(update(JobTask).where(JobTask.status == "queued").values(status="cancelled"))

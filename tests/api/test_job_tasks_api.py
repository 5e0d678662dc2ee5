"""The HTTP contract of merged exports and try-it: what may be asked of which job, the bounds, cancel,
and the embedded mode's hand-over to the task thread. What the worker computes is in tests/worker/test_job_tasks.py."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from api.db import session_factory
from api.models import Job, JobTask, utcnow
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload


@pytest.fixture
def settings(database_url, tmp_path):
    from api.settings import Settings

    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        broker_url=None,
        require_auth=True,
        min_examples=2,
        bootstrap_api_key=None,
        generate_max_new_tokens=64,
        generate_per_tenant=1,
        embedded_poll_seconds=0.2,
    )


@pytest.fixture
def jobs(client, key, database_url):
    """A succeeded job (no adapter folder on disk) and a queued one, of the key's tenant."""
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]
    done, queued = (create_job(client, key, dataset).json()["id"] for _ in range(2))
    with session_factory(database_url).begin() as session:
        session.execute(update(Job).where(Job.id == done).values(status="succeeded", finished_at=utcnow()))
    yield done, queued
    with session_factory(database_url).begin() as session:  # nothing left for later tests' sweeps
        session.execute(update(Job).where(Job.id == queued).values(status="cancelled"))
        session.execute(
            update(JobTask)
            .where(JobTask.job_id.in_((done, queued)), JobTask.status.in_(("queued", "running")))
            .values(status="cancelled")
        )


def test_exports_are_asked_of_succeeded_jobs_once(client, key, jobs):
    done, queued = jobs
    refused = client.post(f"/api/v1/jobs/{queued}/exports", headers=bearer(key), json={"kind": "merged"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_succeeded"
    wrong = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key), json={"kind": "onnx"})
    assert wrong.status_code in (400, 422) and "kind" in wrong.text

    first = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key), json={"kind": "merged"})
    assert first.status_code == 202, first.text
    export = first.json()
    assert export["status"] == "queued" and export["download_url"] is None and export["id"].startswith("export-")
    again = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key))  # the body is optional: merged
    assert again.status_code == 200 and again.json()["id"] == export["id"]
    listed = client.get(f"/api/v1/jobs/{done}/exports", headers=bearer(key)).json()["data"]
    assert [e["id"] for e in listed] == [export["id"]]
    not_ready = client.get(f"/api/v1/exports/{export['id']}/content", headers=bearer(key))
    assert not_ready.status_code == 404 and not_ready.json()["error"]["code"] == "export_not_ready"


def test_try_it_is_bounded_and_cancellable(client, key, jobs):
    done, queued = jobs
    url = f"/api/v1/jobs/{done}/generate"
    assert client.post(f"/api/v1/jobs/{queued}/generate", headers=bearer(key), json={"prompt": "hi"}).status_code == 409
    both = client.post(url, headers=bearer(key), json={"prompt": "hi", "messages": [{"role": "user", "content": "x"}]})
    assert both.status_code in (400, 422) and "exactly one of prompt or messages" in both.text
    too_long = client.post(url, headers=bearer(key), json={"prompt": "hi", "max_new_tokens": 65})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_new_tokens"

    first = client.post(url, headers=bearer(key), json={"prompt": "hi", "max_new_tokens": 8})
    assert first.status_code == 202, first.text
    assert first.json()["messages"] == [{"role": "user", "content": "hi"}] and first.json()["status"] == "queued"
    busy = client.post(
        url, headers=bearer(key), json={"prompt": "again", "max_new_tokens": 8}
    )  # one unfinished per tenant here
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_generations"

    cancelled = client.post(f"/api/v1/generations/{first.json()['id']}/cancel", headers=bearer(key)).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"] is True
    assert (
        client.post(url, headers=bearer(key), json={"prompt": "again", "max_new_tokens": 8}).status_code == 202
    )  # the slot is free


def test_the_embedded_task_thread_is_woken_by_the_api(client, key, jobs, settings):
    from worker.job_tasks import TaskWorker

    done, _ = jobs
    worker = TaskWorker(settings, wakeup=client.app.state.dispatcher.task_wakeup)
    worker.start()
    try:
        export = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key)).json()
        deadline = time.monotonic() + 60
        while (state := client.get(f"/api/v1/exports/{export['id']}", headers=bearer(key)).json())["status"] in (
            "queued",
            "running",
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    # This job has no adapter on disk: the worker ran the task and says why it failed.
    assert state["status"] == "failed" and state["error"]["code"] == "adapter_missing", state


def _use_model(database_url, job_id: str, name: str) -> None:
    with session_factory(database_url).begin() as session:
        job = session.get(Job, job_id)
        job.model, job.config = name, {**job.config, "model": name}


def test_gguf_exports_are_one_per_quantization_and_default_to_f16(client, key, jobs):
    done, _ = jobs
    url = f"/api/v1/jobs/{done}/exports"
    merged = client.post(url, headers=bearer(key), json={"kind": "merged"}).json()
    f16 = client.post(url, headers=bearer(key), json={"kind": "gguf"})
    assert f16.status_code == 202 and (f16.json()["kind"], f16.json()["quantization"]) == ("gguf", "f16")
    q8 = client.post(url, headers=bearer(key), json={"kind": "gguf", "quantization": "q8_0"}).json()
    again = client.post(url, headers=bearer(key), json={"kind": "gguf", "quantization": "f16"})
    assert again.status_code == 200 and again.json()["id"] == f16.json()["id"]
    assert client.post(url, headers=bearer(key), json={"kind": "merged"}).json()["id"] == merged["id"]
    listed = client.get(url, headers=bearer(key)).json()["data"]
    assert sorted(e["id"] for e in listed) == sorted([merged["id"], f16.json()["id"], q8["id"]])
    for body in ({"kind": "gguf", "quantization": "q4_k"}, {"kind": "merged", "quantization": "f16"}):
        refused = client.post(url, headers=bearer(key), json=body)
        assert refused.status_code in (400, 422) and "quantization" in refused.text, body


def test_a_queued_export_is_cancelled_at_once(client, key, jobs):
    done, _ = jobs
    export = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key), json={"kind": "gguf"}).json()
    cancelled = client.post(f"/api/v1/exports/{export['id']}/cancel", headers=bearer(key)).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"] is True
    fresh = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key), json={"kind": "gguf"})
    assert fresh.status_code == 202 and fresh.json()["id"] != export["id"]  # a cancelled export is not reused


def test_a_gguf_export_of_an_unsupported_model_is_refused_before_any_work(
    client, key, jobs, settings, database_url, tmp_path, tiny_model_dir
):
    from tests.utils.models import build_model_folder
    from tests.utils.service import with_tiny_model
    from uds.registry import save_registration

    done, _ = jobs
    save_registration(settings.models_dir, "acme-gemma", build_model_folder(tmp_path / "gemma", "gemma2"), "folder")
    _use_model(database_url, done, "acme-gemma")
    url = f"/api/v1/jobs/{done}/exports"
    refused = client.post(url, headers=bearer(key), json={"kind": "gguf", "quantization": "q8_0"})
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "unsupported_model", refused.text
    assert "'gemma2'" in error["message"] and "supported: llama, qwen2" in error["message"]
    # uds-tiny: every byte is a token, with no merges, which GGUF's byte-level BPE cannot carry.
    with_tiny_model(settings.data_dir, tiny_model_dir)
    _use_model(database_url, done, "uds-tiny")
    tiny = client.post(url, headers=bearer(key), json={"kind": "gguf"})
    assert tiny.status_code == 400 and "merges" in tiny.json()["error"]["message"]
    assert client.get(url, headers=bearer(key)).json()["data"] == []  # nothing stored


def test_two_identical_export_requests_at_once_make_one_export(jobs, database_url, monkeypatch, tmp_path):
    """The first request is held between its check and its insert; the second, sent meanwhile, must wait for it
    and then find its export instead of making a second one."""
    import threading

    from api.services import job_tasks
    from api.settings import Settings

    done, _ = jobs
    sessions = session_factory(database_url)
    # A data folder of its own: the user's default one may hold a built uds-tiny, whose tokenizer GGUF refuses.
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    first_inside, release = threading.Event(), threading.Event()
    real_create = job_tasks.create_task

    def held_create(*args, **kwargs):
        if threading.current_thread().name == "first":
            first_inside.set()
            release.wait(30)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(job_tasks, "create_task", held_create)

    class Queue:
        def enqueue_task(self, task_id):
            pass

    results = {}

    def request(name):
        with sessions() as session:
            task, created = job_tasks.request_export(
                session, Queue(), settings, session.get(Job, done), {"kind": "gguf", "quantization": "q8_0"}
            )
            results[name] = (task.id, created)

    first = threading.Thread(target=request, args=("first",), name="first")
    first.start()
    assert first_inside.wait(30)
    second = threading.Thread(target=request, args=("second",), name="second")
    second.start()
    second.join(1.0)  # were the lock missing, the second would make its own export in this second
    release.set()
    first.join(30)
    second.join(30)
    assert results["first"][1] is True and results["second"] == (results["first"][0], False)
    with sessions() as session:
        assert session.query(JobTask).filter(JobTask.job_id == done, JobTask.kind == "export").count() == 1

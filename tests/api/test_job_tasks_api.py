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
    wrong = client.post(f"/api/v1/jobs/{done}/exports", headers=bearer(key), json={"kind": "gguf"})
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

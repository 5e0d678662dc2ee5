"""Distributed dispatch: POST /jobs puts one `uds.run_job` message on the job queue in the real Redis."""

from __future__ import annotations

import json
import secrets

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload
from tests.utils.service import require_redis


@pytest.fixture
def redis_queue():
    import redis

    url = require_redis()
    queue = f"uds-test-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(url)
    yield url, queue, client
    client.delete(queue)


def test_create_job_sends_the_task_by_name(settings, key, redis_queue):
    url, queue, redis_client = redis_queue
    distributed = settings.model_copy(update={"broker_url": url, "queue": queue})
    with TestClient(create_app(distributed)) as client:
        assert client.get("/readyz").json()["checks"]["broker"] == "ok"
        assert client.get("/api/v1/info").json()["mode"] == "distributed"
        dataset = upload(client, key, jsonl(chat_rows(3))).json()
        job = create_job(client, key, dataset["id"]).json()
        assert job["status"] == "queued"
    assert redis_client.llen(queue) == 1
    message = json.loads(redis_client.lindex(queue, 0))
    assert message["headers"]["task"] == "uds.run_job"
    assert json.loads(__import__("base64").b64decode(message["body"]))[0] == [job["id"]]


def queued_job_ids(redis_client, queue) -> list[str]:
    import base64

    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in redis_client.lrange(queue, 0, -1)]


def test_unreachable_broker_still_creates_the_job_and_the_sweep_sends_it(settings, key, redis_queue):
    """A send that fails after the row is committed: 201 and `queued` (a 5xx would make clients retry into a
    second job), dispatched_at NULL, and the workers' sweep sends it once the broker takes messages."""
    from sqlalchemy import select

    from api.db import session_factory
    from api.dispatch import CeleryDispatcher
    from api.models import Job
    from tests.utils.service import free_port
    from worker.recovery import redispatch_queued

    url, queue, redis_client = redis_queue
    broken = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0", "queue": queue})
    with TestClient(create_app(broken)) as client:
        dataset = upload(client, key, jsonl(chat_rows(3))).json()
        response = client.post(
            "/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset["id"], "model": "uds-tiny"}
        )
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["status"] == "queued" and job["error"] is None
        events = client.get(f"/api/v1/jobs/{job['id']}/events", headers=bearer(key)).json()["data"]
        assert events[0]["type"] == "dispatch" and events[0]["level"] == "warning"
    with session_factory(settings.sqlalchemy_url)() as session:
        assert session.scalar(select(Job.dispatched_at).where(Job.id == job["id"])) is None

    # The broker is back (here: the real Redis): the sweep of any worker sends it, and only once per period.
    working = settings.model_copy(update={"broker_url": url, "queue": queue})
    sender = CeleryDispatcher(working)
    assert job["id"] in redispatch_queued(working, sender.enqueue)
    assert job["id"] in queued_job_ids(redis_client, queue)
    assert job["id"] not in redispatch_queued(working, sender.enqueue)
    assert queued_job_ids(redis_client, queue).count(job["id"]) == 1

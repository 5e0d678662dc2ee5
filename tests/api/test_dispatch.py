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


def test_unreachable_broker_fails_the_job_with_503(settings, key):
    from tests.utils.service import free_port

    broken = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(broken)) as client:
        dataset = upload(client, key, jsonl(chat_rows(3))).json()
        response = client.post("/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset["id"], "model": "uds-tiny"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "broker_unavailable"
        jobs = client.get("/api/v1/jobs", headers=bearer(key)).json()["data"]
        assert [(j["status"], j["error"]["code"]) for j in jobs] == [("failed", "dispatch_failed")]

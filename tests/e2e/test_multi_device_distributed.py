"""Multi-device jobs in the distributed mode: the real Postgres, Redis as the Celery broker, two real celery workers,
one offering one device and one offering two (two gloo processes on the CPU).

A 2-device job is routed to the worker that offers two devices (the one-device worker never receives it), trains
there under torchrun, and picks what the same job picks on one device; one-device jobs still run anywhere.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.e2e.test_multi_device import JOB, assert_close_adapters, picks, upload_dataset
from tests.utils.adapters import adapter_tensors
from tests.utils.service import (
    Server,
    Worker,
    distributed_env,
    free_port,
    fresh_postgres_database,
    poll_job,
    require_redis,
    with_tiny_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

KEY = "uds-e2e-devices-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    redis_url = require_redis()
    queue = f"uds-devices-{secrets.token_hex(4)}"
    data_dir = with_tiny_model(tmp_path_factory.mktemp("devices-data"), tiny_model_dir)
    logs = tmp_path_factory.mktemp("devices-logs")
    with fresh_postgres_database("uds_devices") as database_url:
        env = distributed_env(
            database_url,
            redis_url,
            queue,
            data_dir,
            KEY,
            "devices",
            UDS_HEARTBEAT_SECONDS="1",
            UDS_STALE_AFTER_SECONDS="60",
            UDS_METRICS_FLUSH_SECONDS="0.5",
            UDS_MAX_JOB_DEVICES="2",
        )
        server = Server(free_port(), env, logs / "api.log")
        workers = {
            devices: Worker(
                {**env, "UDS_WORKER_DEVICES": str(devices)}, logs / f"worker{devices}.log", queue, f"d{devices}@%h"
            )
            for devices in (1, 2)
        }
        try:
            server.wait_ready()

            def logs_tail():
                return "\n".join(f"--- {p.log_path.name}\n{p.log(3000)}" for p in (server, *workers.values()))

            yield {"url": server.url, "logs": logs_tail, "workers": workers}
        finally:
            for process in (*workers.values(), server):
                process.stop()
            import redis

            connection = redis.Redis.from_url(redis_url)
            connection.delete(queue, f"{queue}.devices-2")


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack["url"], timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(client, tmp_path_factory):
    return upload_dataset(client, tmp_path_factory.mktemp("datasets"))


def run(client, stack, dataset, devices: int) -> dict:
    body = {"dataset_id": dataset["id"], "model": "uds-tiny", **JOB, "devices": devices}
    created = client.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    return poll_job(client, created.json()["id"], {"succeeded"}, timeout=300, on_timeout=stack["logs"])


def worker_of(client, job_id) -> str:
    events = client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    running = [e for e in events if e["type"] == "status" and e["data"]["status"] == "running"]
    assert len(running) == 1
    return running[0]["data"]["worker_id"]


def test_a_two_device_job_runs_on_the_worker_with_two_devices(client, stack, dataset, tmp_path):
    one = run(client, stack, dataset, devices=1)
    two = run(client, stack, dataset, devices=2)
    assert picks(client, two["id"]) == picks(client, one["id"])
    assert_close_adapters(
        adapter_tensors(client, one["id"], tmp_path / "one"), adapter_tensors(client, two["id"], tmp_path / "two")
    )
    events = client.get(f"/api/v1/jobs/{two['id']}/events", params={"limit": 100}).json()["data"]
    assert next(e for e in events if e["type"] == "started")["data"]["devices"] == 2
    # Only the two-device worker consumes the two-device queue: the pool process that claimed the job is its child.
    claimer = int(worker_of(client, two["id"]).split(":")[1])
    assert parent_pid(claimer) == stack["workers"][2].proc.pid


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_more_devices_than_any_worker_offers_is_refused(client, dataset):
    body = {"dataset_id": dataset["id"], "model": "uds-tiny", **JOB, "devices": 4}
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "devices_unavailable"

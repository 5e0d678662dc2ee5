"""A job whose Celery message was lost before any worker took it, end to end: the real Postgres (a database of our
own), a redis-server of our own on a free port (flushed: the message is gone), the API server and a real celery
worker. The worker's recovery sweep sends the job again and it trains, once; a duplicated message (a job sent
twice) trains once too; and each job is re-sent at most once per UDS_REDISPATCH_AFTER_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil

import httpx
import pytest

from tests.reliability.test_faults_distributed import RedisServer
from tests.utils.datasets import write_dataset
from tests.utils.factories import TINY_JOB
from tests.utils.service import Server, Worker, child_env, free_port, fresh_postgres_database, poll_job

pytestmark = [pytest.mark.slow, pytest.mark.services]

KEY = "uds-lost-" + secrets.token_hex(16)
QUEUE = "gpu-lost-" + secrets.token_hex(3)
PERIOD = 2.0  # UDS_REDISPATCH_AFTER_SECONDS here; the worker sweeps every PERIOD / 2
JOB = {**TINY_JOB, "max_steps": 3, "checkpoint_every": 3}


def events(client, job_id) -> list[dict]:
    return list(reversed(client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]))


def test_a_lost_message_is_sent_again_and_the_job_trains_once(tmp_path, tiny_model_dir):
    import redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    os.symlink(tiny_model_dir, data_dir / "models" / "uds-tiny")
    broker = RedisServer(free_port(), tmp_path / "redis.log")
    processes = [broker]
    try:
        with fresh_postgres_database("uds_lost") as database_url:
            env = child_env(
                UDS_DATABASE_URL=database_url,
                UDS_BROKER_URL=f"redis://127.0.0.1:{broker.port}/0",
                UDS_QUEUE=QUEUE,
                UDS_DATA_DIR=str(data_dir),
                UDS_BOOTSTRAP_API_KEY=KEY,
                UDS_REQUIRE_AUTH="true",
                UDS_MIN_EXAMPLES="8",
                UDS_DEVICE="cpu",
                UDS_REDISPATCH_AFTER_SECONDS=str(PERIOD),
                UDS_METRICS_FLUSH_SECONDS="0.3",
            )
            server = Server(free_port(), env, tmp_path / "api.log")
            processes.append(server)
            server.wait_ready()

            def logs():
                return "\n".join(f"--- {p.log_path.name}\n{p.log(3000)}" for p in processes)

            with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
                path = tmp_path / "reverse.jsonl"
                write_dataset(path, 24, fmt="chat", seed=3)
                with open(path, "rb") as f:
                    dataset = client.post("/api/v1/datasets", files={"file": (path.name, f)}).json()

                def submit() -> str:
                    response = client.post(
                        "/api/v1/jobs", json={"dataset_id": dataset["id"], "model": "uds-tiny", **JOB}
                    )
                    assert response.status_code == 201, response.text
                    return response.json()["id"]

                queue = redis.Redis(port=broker.port)
                lost = submit()
                assert queue.llen(QUEUE) == 1
                queue.flushall()  # the broker loses everything before any worker ran: the job's message is gone
                assert queue.llen(QUEUE) == 0
                doubled = submit()
                queue.rpush(QUEUE, queue.lindex(QUEUE, 0))  # and this job's message is delivered twice
                assert queue.llen(QUEUE) == 2

                processes.append(Worker(env, tmp_path / "worker.log", QUEUE, "lost@%h"))
                for job_id in (lost, doubled):
                    final = poll_job(client, job_id, {"succeeded"}, timeout=180, on_timeout=logs)
                    assert final["attempts"] == 1  # trained once: one claim
                    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 100}).json()["data"]
                    assert [m["step"] for m in metrics] == list(range(1, JOB["max_steps"] + 1))
                    history = events(client, job_id)
                    running = [e for e in history if e["type"] == "status" and e["data"]["status"] == "running"]
                    assert len(running) == 1, history
                    # Re-sent at most once per period (it may wait behind the other job for a while).
                    sent_again = [
                        dt.datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))
                        for e in history
                        if e["type"] == "dispatch"
                    ]
                    gaps = [(b - a).total_seconds() for a, b in zip(sent_again, sent_again[1:], strict=False)]
                    assert all(gap >= PERIOD * 0.9 for gap in gaps), (sent_again, history)
                    if job_id == lost:
                        assert sent_again and sent_again[0] < dt.datetime.fromisoformat(
                            running[0]["created_at"].replace("Z", "+00:00")
                        ), history
    finally:
        for process in reversed(processes):
            process.stop()

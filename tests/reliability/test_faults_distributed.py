"""Faults in the distributed mode, on the real Postgres (a database of our own) and a Redis of our own (a separate
redis-server on a free port, so restarting it disturbs no one else), with real celery worker processes:

- kill -9 of the worker mid-job; a new worker takes the job over once and finishes it from the newest checkpoint;
  every step's metrics exactly once; the adapter equals the adapter of the same job run without interruption;
- Redis restarted and every Postgres connection terminated mid-job: the job completes, metrics exactly once,
  the adapter again equals the uninterrupted one, and a job submitted after the restart runs too.
"""

from __future__ import annotations

import secrets
import shutil
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.utils.adapters import adapter_tensors, assert_same_tensors
from tests.utils.datasets import write_dataset
from tests.utils.factories import TINY_JOB
from tests.utils.hold import StepHold
from tests.utils.service import (
    RedisServer,
    Server,
    Worker,
    distributed_env,
    free_port,
    fresh_postgres_database,
    poll_job,
    wait_for,
    with_tiny_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

KEY = "uds-faults-" + secrets.token_hex(16)
JOB = {**TINY_JOB, "max_steps": 10, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    data_dir = with_tiny_model(tmp_path_factory.mktemp("faults-data"), tiny_model_dir)
    logs = tmp_path_factory.mktemp("faults-logs")
    redis_port = free_port()
    state = {"redis": RedisServer(redis_port, logs / "redis.log"), "workers": [], "logs": logs}
    with fresh_postgres_database("uds_faults") as database_url:
        env = distributed_env(
            database_url,
            f"redis://127.0.0.1:{redis_port}/0",
            "gpu-faults",
            data_dir,
            KEY,
            "faults",
            UDS_HEARTBEAT_SECONDS="1",
            UDS_STALE_AFTER_SECONDS="30",
            UDS_METRICS_FLUSH_SECONDS="0.3",
        )
        server = Server(free_port(), env, logs / "api.log")
        state.update(env=env, server=server, database_url=database_url, url=server.url)

        def start_worker(preload: str = "") -> Worker:
            n = len(state["workers"]) + 1
            worker = Worker(env, logs / f"worker{n}.log", "gpu-faults", f"faults{n}@%h", preload=preload)
            state["workers"].append(worker)
            return worker

        def tail():
            return "\n".join(
                f"--- {p.log_path.name}\n{p.log(3000)}" for p in (server, *state["workers"], state["redis"])
            )

        state.update(start_worker=start_worker, logs_tail=tail)
        try:
            server.wait_ready()
            yield state
        finally:
            for process in (*state["workers"], server, state["redis"]):
                process.stop()


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack["url"], timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("datasets") / "reverse.jsonl"
    write_dataset(path, 48, fmt="chat", seed=5)
    with open(path, "rb") as f:
        response = client.post("/api/v1/datasets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return response.json()


def submit(client, dataset) -> str:
    response = client.post("/api/v1/jobs", json={"dataset_id": dataset["id"], "model": "uds-tiny", **JOB})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def metric_steps(client, job_id) -> list[int]:
    return [m["step"] for m in client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]]


def selection_counts(database_url, job_id) -> dict[int, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT step, count(*) FROM selections WHERE job_id = :j GROUP BY step"), {"j": job_id}
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def check_exactly_once(stack, client, job_id) -> None:
    steps = metric_steps(client, job_id)
    assert steps == list(range(1, JOB["max_steps"] + 1)), steps  # no gap, no duplicate
    assert selection_counts(stack["database_url"], job_id) == {s: 8 for s in range(1, JOB["max_steps"] + 1)}
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["examples_scored"] == 8 * JOB["max_steps"] and job["examples_trained"] == 2 * JOB["max_steps"]


@pytest.fixture(scope="module")
def reference(stack, client, dataset, tmp_path_factory):
    """The same job, run once without interruption, on a worker of its own."""
    worker = stack["start_worker"]()
    try:
        job_id = submit(client, dataset)
        poll_job(client, job_id, {"succeeded"}, timeout=300, on_timeout=stack["logs_tail"])
        return adapter_tensors(client, job_id, tmp_path_factory.mktemp("reference"))
    finally:
        worker.stop()


def test_kill_9_of_the_worker_mid_job_resumes_on_a_new_worker_exactly(stack, client, dataset, reference, tmp_path):
    # The job waits at step 3 (after the checkpoint of step 2) until the kill: polling alone could see it finish.
    first = stack["start_worker"](StepHold(tmp_path, step=3).preload)
    job_id = submit(client, dataset)

    def past_a_checkpoint():
        checkpoints = client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"]
        step = client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"]
        return checkpoints and checkpoints[0]["step"] < step < JOB["max_steps"]

    wait_for(past_a_checkpoint, 300, "a step after a checkpoint", interval=0.05, on_timeout=stack["logs_tail"])
    first.kill()  # SIGKILL to the whole group: the celery main process and its prefork child
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"

    stack["start_worker"]()  # its recovery sweep finds the owner's process gone and re-queues the job
    final = poll_job(client, job_id, {"succeeded"}, timeout=300, on_timeout=stack["logs_tail"])
    assert final["attempts"] == 2
    check_exactly_once(stack, client, job_id)
    events = client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    assert sum("re-queued" in e["message"] for e in events) == 1  # taken over once
    assert sum(e["type"] == "resumed" for e in events) == 1
    running = [e for e in events if e["type"] == "status" and e["data"].get("status") == "running"]
    assert len(running) == 2 and running[0]["data"]["worker_id"] != running[1]["data"]["worker_id"]
    assert_same_tensors(reference, adapter_tensors(client, job_id, tmp_path))


def terminate_backends(database_url) -> int:
    """pg_terminate_backend on every connection to our own test database but this one."""
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                        "AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).all()
            )
    finally:
        admin.dispose()


def test_redis_restart_and_dropped_postgres_connections_mid_job(stack, client, dataset, reference, tmp_path):
    if not any(w.alive() for w in stack["workers"]):
        stack["start_worker"]()
    job_id = submit(client, dataset)
    wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"] >= 2,
        300,
        "two steps",
        interval=0.05,
        on_timeout=stack["logs_tail"],
    )

    # Redis goes away (everything it held is lost: no persistence) and comes back on the same port.
    stack["redis"].kill()
    stack["redis"] = RedisServer(stack["redis"].port, stack["logs"] / "redis2.log")
    # Then every Postgres connection of the API and the worker is cut, several times, while the job trains.
    terminated = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        terminated += terminate_backends(stack["database_url"])
        time.sleep(0.25)
    assert terminated > 0

    final = poll_job(client, job_id, {"succeeded"}, timeout=300, on_timeout=stack["logs_tail"])
    assert final["attempts"] == 1  # the worker rode it out; nobody had to take the job over
    check_exactly_once(stack, client, job_id)
    assert_same_tensors(reference, adapter_tensors(client, job_id, tmp_path))

    # The broker connection of both the API and the worker recovered: a new job goes through the new Redis.
    after = submit(client, dataset)
    poll_job(client, after, {"succeeded"}, timeout=300, on_timeout=stack["logs_tail"])
    check_exactly_once(stack, client, after)

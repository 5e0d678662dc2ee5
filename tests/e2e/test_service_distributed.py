"""The distributed mode end to end: the real Postgres, the real Redis as Celery broker, real `celery` worker
processes and the API server process, over real HTTP with API keys. The same flow as the embedded test, then two
jobs trained at once on two worker processes.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.utils.datasets import write_dataset
from tests.utils.factories import TINY_JOB
from tests.utils.hold import StepHold
from tests.utils.metrics import label_values, samples_named, scrape, value
from tests.utils.service import (
    Server,
    Worker,
    check_succeeded_job,
    distributed_env,
    free_port,
    fresh_postgres_database,
    poll_job,
    require_redis,
    wait_for,
    with_tiny_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

KEY = "uds-e2e-distributed-" + secrets.token_hex(16)
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    """API server + two single-process GPU-style workers sharing one data volume, one database, one queue."""
    redis_url = require_redis()
    queue = f"uds-e2e-{secrets.token_hex(4)}"
    data_dir = with_tiny_model(tmp_path_factory.mktemp("distributed-data"), tiny_model_dir)
    logs = tmp_path_factory.mktemp("distributed-logs")
    with fresh_postgres_database("uds_e2e") as database_url:
        env = distributed_env(
            database_url,
            redis_url,
            queue,
            data_dir,
            KEY,
            "e2e",
            UDS_HEARTBEAT_SECONDS="1",
            UDS_STALE_AFTER_SECONDS="30",
            UDS_METRICS_FLUSH_SECONDS="0.5",
            UDS_METRICS_TOKEN=METRICS_TOKEN,
        )
        server = Server(free_port(), env, logs / "api.log")
        hold = StepHold(logs, step=1, engaged=False)  # engaged by a test that needs jobs to wait after step 1
        workers = [Worker(env, logs / f"worker{i}.log", queue, f"w{i}@%h", preload=hold.preload) for i in (1, 2)]
        try:
            server.wait_ready()

            def logs_tail():
                return "\n".join(f"--- {p.log_path.name}\n{p.log(3000)}" for p in (server, *workers))

            yield {"url": server.url, "database_url": database_url, "logs": logs_tail, "workers": workers, "hold": hold}
        finally:
            for process in (*workers, server):
                process.stop()
            import redis

            redis.Redis.from_url(redis_url).delete(queue)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("datasets") / "reverse.jsonl"
    write_dataset(path, 48, fmt="chat", seed=4)
    return path


def client_for(stack, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=stack["url"], timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {})


def upload(client, path) -> dict:
    with open(path, "rb") as f:
        response = client.post("/api/v1/datasets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return response.json()


def test_flow_on_postgres_redis_and_celery(stack, dataset_file, tiny_model_dir, tmp_path):
    with client_for(stack, None) as anonymous:
        assert anonymous.get("/api/v1/jobs").status_code == 401
    with client_for(stack) as client:
        ready = client.get("/readyz").json()
        assert ready["checks"] == {"database": "ok", "broker": "ok"} and ready["mode"] == "distributed"
        dataset = upload(client, dataset_file)
        created = client.post("/api/v1/jobs", json={"dataset_id": dataset["id"], "model": "uds-tiny", **TINY_JOB})
        assert created.status_code == 201, created.text
        job = poll_job(client, created.json()["id"], {"succeeded"}, timeout=300, on_timeout=stack["logs"])
        check_succeeded_job(
            client, job, tmp_path, tiny_model_dir, steps=TINY_JOB["max_steps"], candidates=8, selected=2
        )
        # The worker (not the API process) trained it: the running event names a celery worker process.
        events = client.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
        running = [e for e in events if e["type"] == "status" and e["data"]["status"] == "running"]
        assert len(running) == 1 and running[0]["data"]["worker_id"]


def test_two_jobs_train_at_once_on_two_workers(stack, dataset_file):
    engine = create_engine(stack["database_url"])
    # Each job waits after its first step until both run: otherwise the first can finish before the second starts.
    stack["hold"].engage()
    with client_for(stack) as client:
        dataset = upload(client, dataset_file)
        ids = [
            client.post(
                "/api/v1/jobs",
                json={"dataset_id": dataset["id"], "model": "uds-tiny", "seed": seed, **{**TINY_JOB, "max_steps": 12}},
            ).json()["id"]
            for seed in (1, 2)
        ]

        def both_running_on_different_workers():
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT status, worker_id FROM jobs WHERE id IN (:a, :b)"), {"a": ids[0], "b": ids[1]}
                ).all()
            owners = {w for s, w in rows if s == "running"}
            return len(owners) == 2

        try:
            wait_for(
                both_running_on_different_workers,
                300,
                "both jobs running at once",
                interval=0.1,
                on_timeout=stack["logs"],
            )
        finally:
            stack["hold"].release()
        for job_id in ids:
            final = poll_job(client, job_id, {"succeeded"}, timeout=300, on_timeout=stack["logs"])
            steps = [
                m["step"] for m in client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
            ]
            assert steps == list(range(1, 13)) and final["attempts"] == 1
    engine.dispose()


def _metrics_agree_with_the_database(samples, engine) -> None:
    """Jobs by status, steps and examples as /metrics gives them, against the same figures read in SQL."""
    with engine.connect() as connection:
        by_status = dict(connection.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        by_method = {
            method: (steps, scored, trained)
            for method, steps, scored, trained in connection.execute(
                text(
                    "SELECT method, sum(current_step), sum(examples_scored), sum(examples_trained) "
                    "FROM jobs GROUP BY method"
                )
            )
        }
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert value(samples, "uds_jobs", status=status) == by_status.get(status, 0), status
    for method, (steps, scored, trained) in by_method.items():
        assert value(samples, "uds_job_steps_total", method=method) == steps
        assert value(samples, "uds_examples_scored_total", method=method) == scored
        assert value(samples, "uds_examples_trained_total", method=method) == trained
        assert value(samples, "uds_backward_passes_saved_total", method=method) == scored - trained


def test_metrics_during_and_after_a_job_agree_with_the_database(stack, dataset_file):
    """The operator's scrape of the API (one target for the Celery workers' figures too) while a job is held at its
    first step, and after it finished; tenant keys are refused, and no id of a job or dataset becomes a label."""
    engine = create_engine(stack["database_url"])
    with client_for(stack) as tenant, client_for(stack, METRICS_TOKEN) as operator:
        assert tenant.get("/metrics").status_code == 401  # a tenant's key is not the operator's token
        dataset = upload(tenant, dataset_file)
        stack["hold"].engage()
        try:
            created = tenant.post("/api/v1/jobs", json={"dataset_id": dataset["id"], "model": "uds-tiny", **TINY_JOB})
            job_id = created.json()["id"]

            def held_at_step_one():
                with engine.connect() as connection:
                    row = connection.execute(
                        text("SELECT status, current_step FROM jobs WHERE id = :id"), {"id": job_id}
                    ).one()
                return tuple(row) == ("running", 1)

            wait_for(held_at_step_one, 300, "the job held at step 1", interval=0.1, on_timeout=stack["logs"])
            during = scrape(operator, METRICS_TOKEN)
            _metrics_agree_with_the_database(during, engine)
            assert value(during, "uds_jobs", status="running") >= 1 and value(during, "uds_workers_busy") >= 1
            assert value(during, "uds_job_steps_total", method="uds") >= 1
            assert value(during, "uds_step_seconds_total", part="scoring", method="uds") > 0
            assert 0 <= value(during, "uds_worker_heartbeat_age_seconds") < 30  # UDS_STALE_AFTER_SECONDS
            assert not samples_named(during, "uds_device_memory_bytes")  # CPU workers: no device memory figure
        finally:
            stack["hold"].release()
        poll_job(tenant, job_id, {"succeeded"}, timeout=300, on_timeout=stack["logs"])
        after = scrape(operator, METRICS_TOKEN)
    _metrics_agree_with_the_database(after, engine)
    with engine.connect() as connection:
        succeeded = connection.execute(
            text("SELECT count(*) FROM jobs WHERE status = 'succeeded' AND method = 'uds' AND started_at IS NOT NULL")
        ).scalar()
        ids = {r[0] for r in connection.execute(text("SELECT id FROM jobs UNION SELECT id FROM datasets"))}
    engine.dispose()
    assert value(after, "uds_job_duration_seconds_count", method="uds", outcome="succeeded") == succeeded >= 1
    assert value(after, "uds_queue_oldest_job_age_seconds") == 0 and value(after, "uds_jobs", status="queued") == 0
    routes = {dict(labels)["route"] for labels, _ in samples_named(after, "uds_http_requests_total")}
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/datasets"} <= routes
    assert value(after, "uds_http_errors_total", route="/metrics", status="401", code="invalid_metrics_token") >= 1
    labels = label_values(after)
    assert job_id in ids and dataset["id"] in ids
    assert not [v for v in labels if any(i in v for i in ids)], "a job or dataset id became a label"

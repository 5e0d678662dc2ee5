"""GET /metrics: who may read it, requests counted by route template and error code, the database's figures, tenant
labels only when asked for, and request counts summed over `uvicorn --workers 2` (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import datetime as dt
import secrets
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from api.db import session_factory
from api.main import create_app
from api.models import JOB_STATUSES, Job, StepMetric, Tenant
from tests.utils.factories import bearer, new_tenant_key
from tests.utils.metrics import label_values, samples_named, scrape, value
from tests.utils.service import Process, child_env, free_port, migrated_sqlite, wait_for

TOKEN = "metrics-" + secrets.token_hex(16)


@pytest.fixture
def operator(settings):
    """A server that requires API keys, with an operator metrics token."""
    with TestClient(create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}))) as client:
        yield client


def test_metrics_take_the_operator_token_and_no_tenant_key(operator, key):
    for headers in ({}, bearer(key), bearer(TOKEN + "x"), {"Authorization": TOKEN}):
        response = operator.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "invalid_metrics_token"
    response = operator.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "/metrics" not in operator.get("/openapi.json", headers=bearer(key)).json()["paths"]


def test_metrics_are_off_without_a_token_where_keys_are_required(client, key):
    for headers in ({}, bearer(key)):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "metrics_disabled"
        assert "UDS_METRICS_TOKEN" in response.json()["error"]["message"]


def test_a_keyless_loopback_server_answers_its_own_host_only(tmp_path):
    from api.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", host="127.0.0.1", require_auth="auto"))
    with TestClient(app, client=("127.0.0.1", 40000), base_url="http://127.0.0.1") as local:
        assert local.get("/metrics").status_code == 200
    with TestClient(app, client=("10.1.2.3", 40000), base_url="http://127.0.0.1") as remote:
        assert remote.get("/metrics").status_code == 403


def test_requests_are_counted_by_route_template_and_error_code(operator, key):
    job_id, file_id = f"ftjob-{secrets.token_hex(12)}", f"file-{secrets.token_hex(12)}"
    before = scrape(operator, TOKEN)
    assert operator.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(key)).status_code == 404
    assert operator.get(f"/v1/fine_tuning/jobs/{job_id}", headers=bearer(key)).status_code == 404
    assert operator.get(f"/api/v1/datasets/{file_id}", headers=bearer(key)).status_code == 404
    assert operator.get(f"/no/such/{file_id}", headers=bearer(key)).status_code == 404
    assert operator.get("/api/v1/jobs", headers=bearer(key)).status_code == 200
    assert operator.get("/api/v1/jobs", headers=bearer("uds-wrong")).status_code == 401
    after = scrape(operator, TOKEN)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    get = {"method": "GET"}
    assert grew("uds_http_requests_total", route="/api/v1/jobs/{job_id}/events", status="404", **get) == 1
    assert grew("uds_http_requests_total", route="/v1/fine_tuning/jobs/{job_id}", status="404", **get) == 1
    assert grew("uds_http_requests_total", route="/api/v1/datasets/{dataset_id}", status="404", **get) == 1
    assert grew("uds_http_requests_total", route="unmatched", status="404", **get) == 1
    assert grew("uds_http_requests_total", route="/api/v1/jobs", status="200", **get) == 1
    assert grew("uds_http_request_duration_seconds_count", route="/api/v1/jobs", **get) == 2
    errors = "uds_http_errors_total"
    assert grew(errors, route="/api/v1/jobs/{job_id}/events", status="404", code="job_not_found") == 1
    assert grew(errors, route="/api/v1/datasets/{dataset_id}", status="404", code="dataset_not_found") == 1
    assert grew(errors, route="unmatched", status="404", code="not_found") == 1
    assert grew(errors, route="/api/v1/jobs", status="401", code="invalid_api_key") == 1
    assert not [v for v in label_values(after) if job_id in v or file_id in v]


def _job(tenant_id: int, status: str, method: str = "uds", **values) -> Job:
    now = dt.datetime.now(dt.timezone.utc)
    return Job(
        id=f"ftjob-{secrets.token_hex(12)}",
        tenant_id=tenant_id,
        status=status,
        model="uds-tiny",
        method=method,
        config={"budget": 0.25},
        dataset_id=f"file-{secrets.token_hex(12)}",
        created_at=values.pop("created_at", now),
        **values,
    )


def test_the_database_figures_agree_with_the_database(operator, database_url):
    """Queued age, durations by method and outcome, throughput sums, heartbeats and device memory, from rows a
    worker would have written (jobs of other tests in this database count too: compared as differences)."""
    tenant_name, _ = new_tenant_key(database_url)
    sessions = session_factory(database_url)
    now = dt.datetime.now(dt.timezone.utc)
    before = scrape(operator, TOKEN)
    with sessions.begin() as session:
        tenant_id = session.execute(select(Tenant.id).where(Tenant.name == tenant_name)).scalar_one()
        finished = [
            _job(tenant_id, "succeeded", "max_grad", started_at=now - dt.timedelta(seconds=20), finished_at=now),
            _job(tenant_id, "failed", "max_grad", started_at=now - dt.timedelta(seconds=4000), finished_at=now),
            _job(tenant_id, "cancelled", "max_grad", finished_at=now),  # never started: no duration
        ]
        queued = _job(tenant_id, "queued", created_at=now - dt.timedelta(hours=3))
        running = _job(
            tenant_id,
            "running",
            "random",
            worker_id="host:1",
            heartbeat_at=now - dt.timedelta(seconds=7),
            current_step=2,
            examples_scored=16,
            examples_trained=4,
            tokens_trained=300,
            time_scoring=1.5,
            time_training=0.5,
        )
        session.add_all([*finished, queued, running])
        session.flush()
        session.add_all(
            [
                StepMetric(job_id=running.id, step=1, stats={"device_memory_bytes": 999}),
                StepMetric(job_id=running.id, step=2, stats={"groups": 1, "device_memory_bytes": 123_456}),
            ]
        )
    try:
        after = scrape(operator, TOKEN)

        def grew(name: str, **labels) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        with sessions() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            totals = session.execute(
                select(func.sum(Job.examples_scored), func.sum(Job.examples_trained), func.sum(Job.current_step))
            ).one()
        assert {s: value(after, "uds_jobs", status=s) for s in JOB_STATUSES} == {
            s: by_status.get(s, 0) for s in JOB_STATUSES
        }
        assert value(after, "uds_queue_oldest_job_age_seconds") >= 3 * 3600
        assert value(after, "uds_metrics_database_up") == 1

        succeeded, failed = {"method": "max_grad", "outcome": "succeeded"}, {"method": "max_grad", "outcome": "failed"}
        assert grew("uds_job_duration_seconds_count", **succeeded) == 1
        assert grew("uds_job_duration_seconds_bucket", le="10.0", **succeeded) == 0
        assert grew("uds_job_duration_seconds_bucket", le="30.0", **succeeded) == 1
        assert grew("uds_job_duration_seconds_bucket", le="3600.0", **failed) == 0
        assert grew("uds_job_duration_seconds_bucket", le="10800.0", **failed) == 1
        assert grew("uds_job_duration_seconds_sum", **failed) == pytest.approx(4000, abs=1)
        assert grew("uds_job_duration_seconds_count", method="max_grad", outcome="cancelled") == 0

        assert grew("uds_examples_scored_total", method="random") == 16
        assert grew("uds_examples_trained_total", method="random") == 4
        assert grew("uds_backward_passes_saved_total", method="random") == 12
        assert grew("uds_tokens_trained_total", method="random") == 300
        assert grew("uds_step_seconds_total", part="scoring", method="random") == pytest.approx(1.5)
        assert grew("uds_step_seconds_total", part="training", method="random") == pytest.approx(0.5)
        assert sum(value(after, "uds_examples_scored_total", method=m) for m in _methods(after)) == totals[0]
        assert sum(value(after, "uds_examples_trained_total", method=m) for m in _methods(after)) == totals[1]
        assert sum(value(after, "uds_job_steps_total", method=m) for m in _methods(after)) == totals[2]

        assert value(after, "uds_worker_heartbeat_age_seconds") >= 7
        assert value(after, "uds_workers_busy") >= 1
        assert grew("uds_device_memory_bytes") == 123_456  # the latest step's figure, not an earlier one
        assert not [v for v in label_values(after) if "ftjob-" in v or "file-" in v or tenant_name in v]
    finally:
        with sessions.begin() as session:
            for job in (*finished, queued, running):
                session.execute(StepMetric.__table__.delete().where(StepMetric.job_id == job.id))
                session.execute(Job.__table__.delete().where(Job.id == job.id))


def _methods(samples) -> set[str]:
    return {labels["method"] for labels, _ in samples_named(samples, "uds_examples_scored_total")}


def test_tenant_labels_only_when_switched_on(settings, database_url):
    tenant_name, key = new_tenant_key(database_url)
    with session_factory(database_url).begin() as session:
        tenant_id = session.execute(select(Tenant.id).where(Tenant.name == tenant_name)).scalar_one()
        job = _job(tenant_id, "queued")
        session.add(job)
    try:
        for switched_on in (False, True):
            update = {"metrics_token": SecretStr(TOKEN), "metrics_tenant_labels": switched_on}
            with TestClient(create_app(settings.model_copy(update=update))) as client:
                samples = scrape(client, TOKEN)
            tenants = {dict(labels).get("tenant") for name, labels in samples if name.startswith("uds_")}
            if switched_on:
                assert value(samples, "uds_jobs", status="queued", tenant=tenant_name) == 1
                assert tenant_name in tenants
            else:
                assert tenants == {None}
    finally:
        with session_factory(database_url).begin() as session:
            session.execute(Job.__table__.delete().where(Job.id == job.id))


def test_request_counts_add_up_across_uvicorn_workers(tmp_path_factory, tmp_path):
    """`uvicorn api.main:app --workers 2` with PROMETHEUS_MULTIPROC_DIR: whichever process answers a scrape, it
    counts the requests both processes served."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    port = free_port()
    env = child_env(
        UDS_DATABASE_URL=migrated_sqlite(tmp_path_factory, "multiprocess"),
        UDS_DATA_DIR=str(tmp_path / "data"),
        UDS_METRICS_TOKEN=TOKEN,
        UDS_REQUIRE_AUTH="true",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )
    args = ["-m", "uvicorn", "api.main:app", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    server = Process([sys.executable, *args], env, tmp_path / "uvicorn.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 120, "uvicorn with 2 workers ready", on_timeout=server.log)
        for _ in range(40):  # a new connection each: the two processes take turns accepting them
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        counts = set()
        for _ in range(6):
            samples = scrape(httpx.Client(base_url=url, timeout=10), TOKEN)
            counts.add(value(samples, "uds_http_requests_total", method="GET", route="/healthz", status="200"))
        assert counts == {40}, server.log()
        assert list(folder.glob("counter_*.db"))  # each process's counts, in files named by its pid
    finally:
        server.stop()


def test_an_unhandled_error_counts_as_a_500_internal_error(settings):
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}))

    def boom():
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom/{thing_id}", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        before = scrape(client, TOKEN)
        response = client.get("/api/v1/boom/thing-123")
        assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
        after = scrape(client, TOKEN)
    labels = {"route": "/api/v1/boom/{thing_id}", "status": "500", "code": "internal_error"}
    assert value(after, "uds_http_errors_total", **labels) - value(before, "uds_http_errors_total", **labels) == 1

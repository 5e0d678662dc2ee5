"""POST /api/v1/jobs/estimate: the counts a real uds-tiny job then has, a time only once this deployment measured a
job of the same model and method, the same 4xx as creating the job, and nothing of another tenant's jobs shown."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.db import session_factory
from api.main import create_app
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, create_job, job_row, jsonl, new_tenant_key, upload
from tests.utils.service import migrated_database, with_tiny_model
from worker.runner import run_job

# A few real steps of uds-tiny on CPU; 26 rows at B 8 leave a partial group of 2.
SMALL = dict(
    candidate_batch_size=8,
    budget=0.25,
    max_seq_len=48,
    micro_batch_size=4,
    lora_r=4,
    lora_alpha=8,
    learning_rate=1e-3,
    warmup_ratio=0.0,
)


def estimate(client, key, expect: int = 200, **body):
    response = client.post("/api/v1/jobs/estimate", headers=bearer(key), json={"model": "uds-tiny", **body})
    assert response.status_code == expect, response.text
    return response.json()


@pytest.fixture
def service(database_url, tmp_path, tmp_path_factory, tiny_model_dir):
    """An API on a database of its own (of the package's kind), with uds-tiny: "before any job" must not see the
    other tests' jobs. (client, settings, a tenant's key, the database's URL)."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    with migrated_database(kind, "uds_estimate", tmp_path_factory) as url:
        settings = Settings(
            database_url=url,
            data_dir=with_tiny_model(tmp_path / "data", tiny_model_dir),
            broker_url=None,
            require_auth=True,
            min_examples=2,
            bootstrap_api_key=None,
            device="cpu",
        )
        with TestClient(create_app(settings)) as client:
            yield client, settings, new_tenant_key(url)[1], url


def train(client, key, settings, dataset_id: str, **body) -> dict:
    job = create_job(client, key, dataset_id, **body).json()
    assert run_job(job["id"], "w:estimate", settings) == "succeeded"
    return client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(key)).json()


def test_the_estimate_is_what_the_job_then_does_and_times_it_once_measured(service):
    client, settings, key, _ = service
    dataset = upload(client, key, jsonl(chat_rows(26))).json()
    body = dict(dataset_id=dataset["id"], method="uds", epochs=2, **SMALL)

    before = estimate(client, key, **body)
    assert before["time"]["seconds"] is None and before["time"]["reason"] == "no measurement yet"
    assert before["time"]["based_on"] == 0
    assert before["tokens_counted"] == "exact" and before["tokens_exact"] is False  # selection picks the rows
    cpu = before["memory"]["cpu"]
    assert cpu["peak"] == cpu["weights"] + cpu["lora"] + cpu["selector"] + max(
        cpu["training_activations"], cpu["scoring_activations"]
    )
    assert before["memory"]["cuda"]["weights"] * 2 == cpu["weights"]  # bf16 on CUDA, float32 on the CPU
    assert client.get("/api/v1/jobs", headers=bearer(key)).json()["data"] == []  # nothing created

    job = train(client, key, settings, **body)
    assert (job["progress"]["total_steps"], job["examples_scored"], job["examples_trained"]) == (
        before["steps"],
        before["candidates_scored"],
        before["examples_trained"],
    )
    row = job_row(session_factory(settings.sqlalchemy_url), job["id"])
    assert row.device_kind == "cpu"
    assert row.scoring_rate == pytest.approx(row.examples_scored / row.time_scoring)
    assert row.training_rate == pytest.approx(row.tokens_trained / row.time_training)

    after = estimate(client, key, **body)["time"]
    assert after["based_on"] == 1 and after["reason"] is None and after["device_kind"] == "cpu"
    assert after["scoring_rate"] == pytest.approx(row.scoring_rate)
    expected = before["candidates_scored"] / row.scoring_rate + before["tokens_trained"] / row.training_rate
    assert after["seconds"] == pytest.approx(expected, abs=0.1)

    # Full training over whole epochs: every row trained once an epoch, so the tokens are exact too. Its method
    # has no measurement of its own: the uds job's speed is not taken for it.
    full = dict(body, method="full")
    predicted = estimate(client, key, **full)
    assert predicted["tokens_exact"] is True and predicted["time"]["based_on"] == 0
    done = train(client, key, settings, **full)
    assert (done["examples_scored"], done["examples_trained"], done["tokens_trained"]) == (
        predicted["candidates_scored"],
        predicted["examples_trained"],
        predicted["tokens_trained"],
    )


def test_a_bad_body_gets_what_creating_the_job_would_get(service):
    client, _, key, _ = service
    dataset = upload(client, key, jsonl(chat_rows(6))).json()
    bad_bodies = [
        {"dataset_id": dataset["id"], "budget": 2},
        {"dataset_id": dataset["id"], "epochs": "3"},
        {"dataset_id": dataset["id"], "surprise": 1},
        {"dataset_id": dataset["id"], "model": "no-such-model"},
        {"dataset_id": dataset["id"], "max_seq_len": 5000},
        {"dataset_id": "file-" + "0" * 24},
        {"model": "uds-tiny"},
    ]
    for body in bad_bodies:
        body = {"model": "uds-tiny", **body}
        created = client.post("/api/v1/jobs", headers=bearer(key), json=body)
        estimated = client.post("/api/v1/jobs/estimate", headers=bearer(key), json=body)
        assert 400 <= estimated.status_code < 500 and estimated.status_code == created.status_code, body
        assert estimated.json()["error"] == created.json()["error"], body
    assert client.get("/api/v1/jobs", headers=bearer(key)).json()["data"] == []


def test_another_tenants_job_calibrates_the_time_but_is_never_shown(service):
    client, settings, key, database_url = service
    dataset = upload(client, key, jsonl(chat_rows(16))).json()
    body = dict(dataset_id=dataset["id"], max_steps=2, **SMALL)
    job = train(client, key, settings, **body)

    _, other_key = new_tenant_key(database_url)
    theirs = upload(client, other_key, jsonl(chat_rows(16))).json()
    response = client.post(
        "/api/v1/jobs/estimate",
        headers=bearer(other_key),
        json={**body, "model": "uds-tiny", "dataset_id": theirs["id"]},
    )
    assert response.status_code == 200 and response.json()["time"]["based_on"] == 1
    assert job["id"] not in response.text and dataset["id"] not in response.text
    # ...and the first tenant's dataset is not the other's to estimate on.
    assert estimate(client, other_key, expect=404, **body)["error"]["code"] == "dataset_not_found"


def test_migration_backfills_the_rates_of_succeeded_jobs(database_url, tmp_path_factory):
    """Jobs finished before the rates were recorded: their totals give the rates, their start event the device."""
    import json

    from sqlalchemy import create_engine, text

    from api.db import downgrade, migrate

    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    with migrated_database(kind, "uds_estimate_migration", tmp_path_factory) as url:
        downgrade(url, "0009_job_run_times")
        engine = create_engine(url)
        with engine.begin() as connection:
            tenant = connection.execute(
                text("INSERT INTO tenants (name, created_at) VALUES ('t', '2026-01-01') RETURNING id")
            ).scalar()
            for job_id, status, times in (("ftjob-done", "succeeded", (4.0, 2.0)), ("ftjob-bad", "failed", (1.0, 1.0))):
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, status, cancel_requested, model, method, config, dataset_id, "
                        "seed, created_at, current_step, examples_scored, examples_trained, tokens_trained, "
                        "time_scoring, time_training, attempts, attempt_start_step) VALUES (:id, :t, :s, false, "
                        "'uds-tiny', 'uds', '{}', 'file-x', 0, '2026-01-01', 2, 80, 10, 600, :ts, :tt, 1, 0)"
                    ),
                    {"id": job_id, "t": tenant, "s": status, "ts": times[0], "tt": times[1]},
                )
                connection.execute(
                    text(
                        "INSERT INTO job_events (job_id, created_at, level, type, message, data) "
                        "VALUES (:id, '2026-01-01', 'info', 'started', 'Training', :data)"
                    ),
                    {"id": job_id, "data": json.dumps({"device": "cpu"})},
                )
        migrate(url)
        with engine.connect() as connection:
            rows = dict(
                (r[0], r[1:])
                for r in connection.execute(text("SELECT id, scoring_rate, training_rate, device_kind FROM jobs"))
            )
        engine.dispose()
        assert rows["ftjob-done"] == (20.0, 300.0, "cpu")  # 80 candidates / 4 s, 600 tokens / 2 s
        assert rows["ftjob-bad"] == (None, None, None)
        downgrade(url, "0009_job_run_times")
        migrate(url)


def test_uds_train_dry_run_prints_the_same_estimate(service, tmp_path, monkeypatch, capsys):
    """The CLI computes with the same functions, its time from the local service's finished jobs."""
    from api.settings import get_settings
    from cli.main import main
    from uds.estimate import format_estimate

    client, settings, key, url = service
    rows = chat_rows(20)
    dataset = upload(client, key, jsonl(rows)).json()
    body = dict(dataset_id=dataset["id"], max_steps=3, **SMALL)
    train(client, key, settings, **body)
    from_api = format_estimate(estimate(client, key, **body))
    assert "measured on 1 finished job(s)" in from_api

    monkeypatch.setenv("UDS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UDS_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        data = tmp_path / "train.jsonl"
        data.write_bytes(jsonl(rows))
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in {**SMALL, "max_steps": 3}.items()]
        out = tmp_path / "out"
        assert main(["train", "--data", str(data), "--output-dir", str(out), "--dry-run", *flags]) == 0
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().out.strip() == from_api
    assert not out.exists()  # nothing trained, nothing written

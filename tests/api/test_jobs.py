"""POST/GET /api/v1/jobs, cancel, and the per-job read endpoints (metrics, selections, events, checkpoints)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from api.db import session_factory
from api.ids import parse_event_id
from api.models import Job, utcnow
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload
from worker.db_logger import DbLogger


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(20))).json()


def set_job(settings, job_id: str, **values) -> None:
    with session_factory(settings.sqlalchemy_url).begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def test_create_job_resolves_and_stores_the_full_config(client, key, dataset):
    body = create_job(
        client,
        key,
        dataset["id"],
        budget=0.25,
        candidate_batch_size=8,
        epochs=2,
        name="first",
        suffix="mine",
        metadata={"team": "nlp", "run": 3},
        alpha=0.5,
        lora_targets=["q_proj", "v_proj"],
    ).json()
    assert body["id"].startswith("ftjob-") and body["object"] == "job"
    assert body["status"] == "queued" and body["name"] == "first" and body["metadata"] == {"team": "nlp", "run": 3}
    config = body["config"]
    assert config["budget"] == 0.25 and config["candidate_batch_size"] == 8 and config["alpha"] == 0.5
    assert config["lora_targets"] == ["q_proj", "v_proj"] and config["epochs"] == 2
    # Omitted settings resolved to their defaults; host paths are never stored or shown.
    assert config["learning_rate"] == 1.5e-4 and config["buffer_size"] == 1024 and config["method"] == "uds"
    assert not {"dataset_path", "output_dir", "models_dir", "device"} & set(config)
    assert body["progress"] == {"step": 0, "total_steps": 6, "epoch": None, "fraction": 0.0}  # 2 epochs x ceil(20/8)
    assert body["error"] is None and body["adapter"] is None and body["eta_seconds"] is None
    events = client.get(f"/api/v1/jobs/{body['id']}/events", headers=bearer(key)).json()["data"]
    assert [e["data"]["status"] for e in events] == ["queued", "validating_files"]


def test_full_method_forces_budget_one(client, key, dataset):
    body = create_job(client, key, dataset["id"], method="full", budget=0.1).json()
    assert body["budget"] == 1.0 and body["config"]["budget"] == 1.0


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"budget": 0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"budget": "lots"}, "budget"),
        ({"method": "best"}, "method"),
        ({"candidate_batch_size": 0}, "candidate_batch_size"),
        ({"candidate_batch_size": 2.5}, "candidate_batch_size"),
        ({"alpha": "fast"}, "alpha"),
        ({"alpha": -1}, "alpha"),
        ({"learning_rate": 3}, "learning_rate"),
        ({"lora_targets": []}, "lora_targets"),
        ({"loss_on": "prompt"}, "loss_on"),
        ({"max_steps": -5}, "max_steps"),
        ({"epochs": 0}, "epochs"),
        ({"suffix": "has space"}, "suffix"),
        ({"learning_rates": 0.1}, "learning_rates"),
        ({"dataset_id": None}, "dataset_id"),
        ({"model": None}, "model"),
    ],
)
def test_bad_job_fields_are_400_naming_the_field(client, key, dataset, fields, param):
    body = {"dataset_id": dataset["id"], "model": "uds-tiny", **fields}
    response = client.post("/api/v1/jobs", headers=bearer(key), json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param.split(".")[0] in error["message"]
    assert error["type"] == "invalid_request_error" and error["code"]
    assert client.get("/api/v1/jobs", headers=bearer(key)).json()["data"] == []


def test_unknown_model_and_datasets(client, key, dataset):
    response = create_job(client, key, dataset["id"], expect=400, model="gpt-7")
    assert response.json()["error"]["code"] == "model_not_found" and "uds-tiny" in response.json()["error"]["message"]
    response = create_job(client, key, "file-000000000000000000000000", expect=404)
    assert response.json()["error"]["param"] == "dataset_id" and response.json()["error"]["code"] == "dataset_not_found"
    response = create_job(client, key, dataset["id"], expect=404, eval_dataset_id="file-nope")
    assert response.json()["error"]["param"] == "eval_dataset_id"


def test_allow_listed_models(database_url, tmp_path, key):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        require_auth=True,
        min_examples=2,
        allowed_models="Qwen/Qwen2.5-0.5B, /models/llama",
    )
    with TestClient(create_app(settings)) as client:
        models = client.get("/api/v1/models", headers=bearer(key)).json()["data"]
        ids = [m["id"] for m in models]
        assert ids == ["smollm2-135m-instruct", "uds-tiny", "Qwen/Qwen2.5-0.5B", "/models/llama"]  # built-ins first
        dataset = upload(client, key, jsonl(chat_rows(3))).json()
        assert create_job(client, key, dataset["id"], model="Qwen/Qwen2.5-0.5B").json()["model"] == "Qwen/Qwen2.5-0.5B"


def test_list_filter_and_pagination(client, key, dataset, settings):
    ids = [create_job(client, key, dataset["id"], name=f"job {i}").json()["id"] for i in range(5)]
    set_job(settings, ids[1], status="succeeded")
    set_job(settings, ids[3], status="succeeded")
    everything, after = [], None
    while True:
        page = client.get(
            "/api/v1/jobs", headers=bearer(key), params={"limit": 2, **({"after": after} if after else {})}
        ).json()
        everything += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert everything == ids[::-1]
    succeeded = client.get("/api/v1/jobs", headers=bearer(key), params={"status": "succeeded", "limit": 1}).json()
    assert [j["id"] for j in succeeded["data"]] == [ids[3]] and succeeded["has_more"] is True
    rest = client.get("/api/v1/jobs", headers=bearer(key), params={"status": "succeeded", "after": ids[3]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[1]] and rest["has_more"] is False
    bad = client.get("/api/v1/jobs", headers=bearer(key), params={"status": "sleeping"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_cancel_queued_running_and_finished(client, key, dataset, settings):
    queued = create_job(client, key, dataset["id"]).json()
    response = client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=bearer(key))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=bearer(key))
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_not_cancellable"

    running = create_job(client, key, dataset["id"]).json()
    set_job(settings, running["id"], status="running", worker_id="w", heartbeat_at=utcnow())
    response = client.post(f"/api/v1/jobs/{running['id']}/cancel", headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    # Asking twice while it winds down is fine (a client retrying must not get an error).
    assert client.post(f"/api/v1/jobs/{running['id']}/cancel", headers=bearer(key)).status_code == 200

    for status in ("succeeded", "failed"):
        done = create_job(client, key, dataset["id"]).json()
        set_job(settings, done["id"], status=status)
        response = client.post(f"/api/v1/jobs/{done['id']}/cancel", headers=bearer(key))
        assert response.status_code == 400 and response.json()["error"]["code"] == "job_not_cancellable"
        assert status in response.json()["error"]["message"]


def step_metrics(step: int, rows: list[int], selected: set[int], loss: float = 1.0) -> dict:
    summary = {"mean": 1.0, "std": 0.1, "min": 0.9, "max": 1.1}
    return {
        "step": step,
        "total_steps": 10,
        "epoch": 1,
        "loss": loss,
        "token_accuracy": 0.5,
        "learning_rate": 1e-4,
        "grad_norm": 0.3,
        "tokens_trained": 10 * len(selected),
        "candidates": len(rows),
        "selected": len(selected),
        "time_scoring": 0.01,
        "time_training": 0.02,
        "alpha": 0.7,
        "stats": {
            "candidates": {"utility": summary, "diversity": summary, "score": summary},
            "selected": {"utility": summary, "diversity": None, "score": summary},
        },
        "eval_loss": None,
        "eval_accuracy": None,
        "selections": [
            {"row": r, "selected": r in selected, "utility": float(r), "diversity": 0.5, "score": float(r) + 0.5}
            for r in rows
        ],
    }


@pytest.fixture
def trained_job(client, key, dataset, settings):
    """A job with 6 steps of metrics and selections written the way a worker writes them."""
    job = create_job(client, key, dataset["id"]).json()
    set_job(settings, job["id"], status="running", worker_id="w1", heartbeat_at=utcnow())
    logger = DbLogger(session_factory(settings.sqlalchemy_url), job["id"], "w1", flush_steps=4, flush_seconds=3600)
    for step in range(1, 7):
        rows = [(step * 3 + i) % 20 for i in range(4)]
        logger.log_step(step_metrics(step, rows, {rows[0]}, loss=2.0 / step))
        if step == 3:
            logger.log_checkpoint(
                3, str(settings.data_dir / "jobs" / job["id"] / "checkpoints" / "step-00000003"), {"loss": 0.5}
            )
    logger.flush()
    return job


def test_metrics_are_incremental_for_polling(client, key, trained_job):
    url = f"/api/v1/jobs/{trained_job['id']}/metrics"
    page = client.get(url, headers=bearer(key), params={"limit": 4}).json()
    assert [m["step"] for m in page["data"]] == [1, 2, 3, 4] and page["has_more"] is True and page["last_step"] == 4
    m = page["data"][0]
    assert m["loss"] == 2.0 and m["candidates"] == 4 and m["selected"] == 1 and m["alpha"] == 0.7
    assert m["stats"]["candidates"]["utility"]["mean"] == 1.0 and m["stats"]["selected"]["diversity"] is None
    rest = client.get(url, headers=bearer(key), params={"after_step": page["last_step"]}).json()
    assert [m["step"] for m in rest["data"]] == [5, 6] and rest["has_more"] is False and rest["last_step"] == 6
    empty = client.get(url, headers=bearer(key), params={"after_step": 6}).json()
    assert empty["data"] == [] and empty["last_step"] == 6 and empty["has_more"] is False

    job = client.get(f"/api/v1/jobs/{trained_job['id']}", headers=bearer(key)).json()
    assert job["progress"]["step"] == 6 and job["progress"]["fraction"] == pytest.approx(0.6, abs=0.01)
    assert job["examples_scored"] == 24 and job["examples_trained"] == 6
    assert job["backward_saved_fraction"] == 0.75 and job["alpha_used"] == 0.7
    assert job["latest_loss"] == pytest.approx(2.0 / 6)
    assert job["eta_seconds"] is not None and job["eta_seconds"] >= 0


def test_selections_filters_and_cursor(client, key, trained_job):
    url = f"/api/v1/jobs/{trained_job['id']}/selections"
    all_rows, after = [], None
    while True:
        page = client.get(url, headers=bearer(key), params={"limit": 5, **({"after": after} if after else {})}).json()
        all_rows += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert len(all_rows) == 24 and len({r["id"] for r in all_rows}) == 24
    steps = [r["step"] for r in all_rows]
    assert steps == sorted(steps, reverse=True)
    assert all(r["preview"] and r["preview"].startswith("user:") for r in all_rows)
    picked = client.get(url, headers=bearer(key), params={"selected": "true", "limit": 100}).json()["data"]
    assert len(picked) == 6 and all(r["selected"] for r in picked)
    skipped = client.get(url, headers=bearer(key), params={"selected": "false", "step": 2}).json()["data"]
    assert len(skipped) == 3 and {r["step"] for r in skipped} == {2} and not any(r["selected"] for r in skipped)
    assert client.get(url, headers=bearer(key), params={"after": "x"}).status_code == 400


def test_selection_summary(client, key, trained_job):
    url = f"/api/v1/jobs/{trained_job['id']}/selections/summary"
    most = client.get(url, headers=bearer(key), params={"order": "most", "limit": 100}).json()
    assert most["rows_seen"] == len(most["data"]) and most["has_more"] is False
    assert sum(r["times_selected"] for r in most["data"]) == 6
    assert sum(r["times_candidate"] for r in most["data"]) == 24
    counts = [r["times_selected"] for r in most["data"]]
    assert counts == sorted(counts, reverse=True) and most["data"][0]["preview"]
    least = client.get(url, headers=bearer(key), params={"order": "least", "limit": 3}).json()
    assert least["has_more"] is True and all(r["times_selected"] == 0 for r in least["data"])
    assert client.get(url, headers=bearer(key), params={"order": "random"}).status_code == 400


def test_events_and_checkpoints(client, key, trained_job):
    events = client.get(f"/api/v1/jobs/{trained_job['id']}/events", headers=bearer(key), params={"limit": 2}).json()
    assert events["has_more"] is True and events["data"][0]["type"] == "checkpoint"
    older = client.get(
        f"/api/v1/jobs/{trained_job['id']}/events",
        headers=bearer(key),
        params={"after": events["last_id"], "limit": 100},
    ).json()
    ids = [parse_event_id(e["id"]) for e in events["data"] + older["data"]]
    assert ids == sorted(ids, reverse=True) and older["has_more"] is False
    checkpoints = client.get(f"/api/v1/jobs/{trained_job['id']}/checkpoints", headers=bearer(key)).json()["data"]
    assert [(c["step"], c["available"], c["metrics"]) for c in checkpoints] == [(3, False, {"loss": 0.5})]


def test_adapter_before_success_is_404(client, key, trained_job):
    response = client.get(f"/api/v1/jobs/{trained_job['id']}/adapter", headers=bearer(key))
    assert response.status_code == 404 and response.json()["error"]["code"] == "adapter_not_found"
    assert "running" in response.json()["error"]["message"]


def test_eta_from_observed_rate(client, key, dataset, settings):
    job = create_job(client, key, dataset["id"], candidate_batch_size=2, groups_per_step=1).json()  # 10 steps
    now = utcnow()
    set_job(
        settings,
        job["id"],
        status="running",
        current_step=4,
        attempt_start_step=2,
        attempt_started_at=now - dt.timedelta(seconds=20),
        progress_at=now,
    )
    eta = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(key)).json()["eta_seconds"]
    assert eta == pytest.approx(60, abs=2)  # 10 s per step, 6 steps to go

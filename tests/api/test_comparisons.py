"""POST/GET /api/v1/comparisons, the report (JSON and markdown), cancel and delete, over real HTTP on SQLite and
Postgres. The report is checked against a comparison of real uds-tiny jobs trained by the worker's own runner:
every mean, paired difference, interval, verdict and label share is recomputed here from the jobs' own metrics,
events and selections as the API shows them."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, jsonl, new_tenant_key, upload
from tests.utils.hold import StepHold, install
from tests.utils.service import with_tiny_model
from worker.db_logger import DbLogger
from worker.runner import run_job

# A few real steps of uds-tiny on CPU (seconds per job), as tests/utils/factories.TINY_JOB.
SHARED = dict(
    candidate_batch_size=4,
    max_steps=2,
    max_seq_len=32,
    micro_batch_size=4,
    lora_r=4,
    lora_alpha=8,
    learning_rate=1e-3,
    warmup_ratio=0.0,
    eval_max_new_tokens=4,
)
KINDS = ("fact", "fact", "joke")  # two facts to a joke: the training set's shares are 2/3 and 1/3
T_975_DF1 = 12.706205  # Student's t, 0.975 quantile, 1 degree of freedom (printed tables): two paired seeds


def labelled_rows(n: int = 16) -> list[dict]:
    """Chat rows with a "kind" label, the last one without (it is left out of the shares)."""
    rows = chat_rows(n)
    for i, row in enumerate(rows[:-1]):
        row["kind"] = KINDS[i % len(KINDS)]
    return rows


def post(client, key, expect: int | None = 201, **body):
    response = client.post("/api/v1/comparisons", headers=bearer(key), json=body)
    if expect is not None:
        assert response.status_code == expect, response.text
    return response


def get(client, key, path: str, **params):
    response = client.get(f"/api/v1{path}", headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(client, key, path: str, **params) -> list[dict]:
    items, after = [], None
    while True:
        page = get(client, key, path, **params, **({"after": after} if after else {}))
        items += page["data"]
        if not page["has_more"]:
            return items
        after = page["last_id"]


# ---- a comparison trained for real ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(database_url, tmp_path_factory, tiny_model_dir):
    """2 seeds x (uds, random at 25% + full) = 6 uds-tiny jobs of 2 steps, run to the end by the worker's runner."""
    data_dir = tmp_path_factory.mktemp("comparisons") / "data"
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        broker_url=None,
        require_auth=True,
        min_examples=2,
        max_upload_bytes=64 * 1024,
        bootstrap_api_key=None,
        device="cpu",
    )
    with_tiny_model(data_dir, tiny_model_dir)
    _, key = new_tenant_key(database_url)
    with TestClient(create_app(settings)) as client:
        rows = labelled_rows()
        train = upload(client, key, jsonl(rows)).json()
        held_out = upload(client, key, jsonl(chat_rows(3)), filename="eval.jsonl").json()
        comparison = post(
            client,
            key,
            name="tiny",
            dataset_id=train["id"],
            eval_dataset_id=held_out["id"],
            methods=["uds", "random"],
            budgets=[0.25],
            seeds=2,
            label_field="kind",
            settings=SHARED,
        ).json()
        for run in comparison["runs"]:
            assert run_job(run["job_id"], "w:comparisons", settings) == "succeeded"
        yield SimpleNamespace(client=client, key=key, settings=settings, rows=rows, id=comparison["id"])


def job_facts(client, key, job_id: str) -> dict:
    """What the job's own endpoints say: its last evaluation, its run summary's time, what it picked."""
    metrics = all_pages_metrics(client, key, job_id)
    evaluated = [m for m in metrics if m["eval_loss"] is not None]
    summary = next(e["data"] for e in all_pages(client, key, f"/jobs/{job_id}/events") if e["type"] == "succeeded")
    picked = all_pages(client, key, f"/jobs/{job_id}/selections", selected="true", limit=1000)
    job = get(client, key, f"/jobs/{job_id}")
    return {
        "method": job["method"],
        "budget": job["budget"],
        "seed": job["seed"],
        "eval_loss": evaluated[-1]["eval_loss"],
        "eval_accuracy": evaluated[-1]["eval_accuracy"],
        "seconds": summary["time_scoring"] + summary["time_training"],
        "scoring": summary["time_scoring"],
        "picked_rows": [s["row"] for s in picked],
    }


def all_pages_metrics(client, key, job_id: str) -> list[dict]:
    page = get(client, key, f"/jobs/{job_id}/metrics", limit=1000)
    assert not page["has_more"]
    return page["data"]


def naive_mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.slow
def test_a_trained_comparison_reports_what_its_jobs_measured(trained):
    client, key = trained.client, trained.key
    comparison = get(client, key, f"/comparisons/{trained.id}")
    assert comparison["status"] == "succeeded" and comparison["object"] == "comparison"
    assert comparison["counts"] == {"total": 6, "queued": 0, "running": 0, "succeeded": 6, "failed": 0, "cancelled": 0}
    assert comparison["settings"] == SHARED and comparison["label_field"] == "kind"
    # Seed by seed, methods as asked, full last; each an ordinary job named for its run and linked back.
    plan = [(m, b, s) for s in (0, 1) for m, b in (("uds", 0.25), ("random", 0.25), ("full", 1.0))]
    assert [(r["method"], r["budget"], r["seed"]) for r in comparison["runs"]] == plan
    jobs = {r["job_id"]: get(client, key, f"/jobs/{r['job_id']}") for r in comparison["runs"]}
    assert {j["comparison_id"] for j in jobs.values()} == {trained.id}
    assert jobs[comparison["runs"][0]["job_id"]]["name"] == "tiny: uds 25% seed 0"
    assert jobs[comparison["runs"][2]["job_id"]]["name"] == "tiny: full 100% seed 0"
    assert comparison["finished_at"] == max(j["finished_at"] for j in jobs.values())

    facts = {job_id: job_facts(client, key, job_id) for job_id in jobs}
    for run in comparison["runs"]:
        fact = facts[run["job_id"]]
        assert run["eval_loss"] == fact["eval_loss"] and run["eval_accuracy"] == fact["eval_accuracy"]
        assert run["seconds"] == pytest.approx(fact["seconds"])

    report = get(client, key, f"/comparisons/{trained.id}/report")
    assert (report["complete"], report["runs_done"], report["runs_total"]) == (True, 6, 6)
    assert report["primary_metric"] == "eval_loss"
    assert [m["key"] for m in report["metrics"]] == ["eval_loss", "eval_accuracy"]

    # Rows: full first, then uds before random; means and spreads over the two seeds.
    assert [(r["method"], r["budget"], r["n"]) for r in report["rows"]] == [
        ("full", 1.0, 2),
        ("uds", 0.25, 2),
        ("random", 0.25, 2),
    ]

    def of(method: str) -> list[dict]:
        return sorted((f for f in facts.values() if f["method"] == method), key=lambda f: f["seed"])

    full_seconds = naive_mean_sd([f["seconds"] for f in of("full")])[0]
    for row in report["rows"]:
        runs = of(row["method"])
        for key_ in ("eval_loss", "eval_accuracy", "seconds"):
            mean, sd = naive_mean_sd([f[key_] for f in runs])
            assert row[key_]["mean"] == pytest.approx(mean) and row[key_]["sd"] == pytest.approx(sd, abs=1e-12)
        assert row["time_vs_full"] == pytest.approx(naive_mean_sd([f["seconds"] for f in runs])[0] / full_seconds)
        scoring = sum(f["scoring"] for f in runs) / sum(f["seconds"] for f in runs)
        assert row["scoring_share"] == pytest.approx(scoring)

    # Paired differences, seed by seed: uds against random and full, random against full, on both metrics.
    assert [(d["method"], d["reference"], d["metric"]) for d in report["differences"]] == [
        (m, ref, metric)
        for m, refs in (("uds", ("random", "full")), ("random", ("full",)))
        for ref in refs
        for metric in ("eval_loss", "eval_accuracy")
    ]
    for d in report["differences"]:
        diffs = [a[d["metric"]] - b[d["metric"]] for a, b in zip(of(d["method"]), of(d["reference"]), strict=True)]
        mean, sd = naive_mean_sd(diffs)
        half = T_975_DF1 * sd / math.sqrt(2)
        assert d["n"] == 2 and d["mean"] == pytest.approx(mean)
        assert d["low"] == pytest.approx(mean - half, abs=1e-6)  # the printed t-table has 7 digits
        assert d["high"] == pytest.approx(mean + half, abs=1e-6)
        assert d["reference_budget"] == (1.0 if d["reference"] == "full" else 0.25)
        lower_is_better = d["metric"] == "eval_loss"
        expected = "indistinguishable"
        if d["low"] > 0 or d["high"] < 0:
            expected = "better" if (d["high"] < 0) == lower_is_better else "worse"
        assert d["verdict"] == expected
        against = "full data" if d["reference"] == "full" else d["reference"]
        assert d["sentence"].startswith(f"{d['method']} at 25.0% is ") and against in d["sentence"]
    assert report["sentences"] == [d["sentence"] for d in report["differences"] if d["metric"] == "eval_loss"]

    # Label shares: the training file's, and what each selector picked, from the jobs' own selections.
    kinds = [row.get("kind") for row in trained.rows]
    labels = report["labels"]
    assert labels["field"] == "kind" and labels["labels"] == ["fact", "joke"]
    training = Counter(k for k in kinds if k)
    assert labels["training"] == pytest.approx({k: n / sum(training.values()) for k, n in training.items()})
    assert [(r["method"], r["budget"]) for r in labels["rows"]] == [("uds", 0.25), ("random", 0.25)]
    for row in labels["rows"]:
        picked = [r for f in of(row["method"]) for r in f["picked_rows"]]
        counted = Counter(kinds[r] for r in picked if kinds[r])
        assert row["picked"] == len(picked) > 0
        assert row["shares"] == pytest.approx({k: counted[k] / sum(counted.values()) for k in ("fact", "joke")})
    assert report["notes"] == ["1 of 16 training rows have no string 'kind' and are left out of the label shares."]

    # The same report as a document.
    response = client.get(f"/api/v1/comparisons/{trained.id}/report.md", headers=bearer(key))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
    assert response.headers["content-disposition"] == f'attachment; filename="{trained.id}-report.md"'
    document = response.text
    assert document.startswith("# Compare methods: tiny\n")
    assert "| method | budget | runs | held-out answer loss (nats) ↓ | exact match (pts) ↑ | time (s) |" in document
    assert f"| full | 100.0% | 2 | {report['rows'][0]['eval_loss']['mean']:.3f} ± " in document
    for sentence in report["sentences"]:
        assert f"- {sentence}\n" in document
    assert (
        "## What each method trained on (by `kind`)" in document
        and "| method | budget | picked | fact | joke |" in document
    )
    assert "## Notes" in document and report["notes"][0] in document


@pytest.mark.slow
def test_another_tenant_reaches_none_of_it(trained, database_url):
    client = trained.client
    _, other = new_tenant_key(database_url)
    for method, path in (
        ("GET", ""),
        ("GET", "/report"),
        ("GET", "/report.md"),
        ("POST", "/cancel"),
        ("DELETE", ""),
    ):
        response = client.request(method, f"/api/v1/comparisons/{trained.id}{path}", headers=bearer(other))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "comparison_not_found"
    assert get(client, other, "/comparisons")["data"] == []
    # ... and nothing changed for its owner.
    assert get(client, trained.key, f"/comparisons/{trained.id}")["status"] == "succeeded"


# ---- creation: validation, all or nothing ----------------------------------------------------------------------


@pytest.fixture
def datasets(client, key):
    train = upload(client, key, jsonl(labelled_rows())).json()
    held_out = upload(client, key, jsonl(chat_rows(3)), filename="eval.jsonl").json()
    return {"dataset_id": train["id"], "eval_dataset_id": held_out["id"]}


def assert_nothing_left(client, key) -> None:
    assert get(client, key, "/comparisons")["data"] == []
    assert get(client, key, "/jobs")["data"] == []


@pytest.mark.parametrize(
    "fields, status, code, param",
    [
        ({"methods": ["uds", "greedy"]}, 400, "invalid_value", "methods.1"),
        ({"methods": ["full"]}, 400, "invalid_value", "methods.0"),
        ({"methods": ["uds", "uds"]}, 400, "invalid_value", "methods"),
        ({"budgets": [0.25, 1.0]}, 400, "invalid_value", "budgets.1"),
        ({"budgets": [0.0]}, 400, "invalid_value", "budgets.0"),
        ({"seeds": 1}, 400, "invalid_value", "seeds"),
        ({"seeds": 11}, 400, "invalid_value", "seeds"),
        ({"settings": {"method": "random"}}, 400, "invalid_value", "settings.method"),
        ({"settings": {"seed": 3}}, 400, "invalid_value", "settings.seed"),
        ({"settings": {"learning_rat": 0.1}}, 400, "unknown_parameter", "settings.learning_rat"),
        ({"settings": {"epochs": True}}, 400, "invalid_value", "settings.epochs"),
        ({"settings": {"learning_rate": -1.0}}, 400, "invalid_value", "settings.learning_rate"),
        ({"settings": {"max_seq_len": 100_000}}, 400, "job_too_costly", "settings.max_seq_len"),
        ({"seeds": 10}, 400, "comparison_too_large", "seeds"),  # 10 x (4 x 2 + 1) = 90 > 60
        ({"label_field": "topic"}, 400, "invalid_value", "label_field"),
        ({"dataset_id": "file-" + "0" * 24}, 404, "dataset_not_found", "dataset_id"),
        ({"eval_dataset_id": "file-" + "0" * 24}, 404, "dataset_not_found", "eval_dataset_id"),
        ({"model": "no-such-model"}, 400, "model_not_found", "model"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_and_leaves_nothing(
    client, key, datasets, fields, status, code, param
):
    response = post(client, key, expect=None, **{**datasets, "settings": {"max_steps": 1}, **fields})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert param in error["message"] or error["message"].startswith("No dataset with id"), error
    assert_nothing_left(client, key)


def test_the_defaults_fit_the_default_caps(client, key, datasets):
    """Only the two datasets: every selector at the default budgets, full, default seeds; within the default
    UDS_MAX_ACTIVE_JOBS, UDS_MAX_COMPARISON_JOBS and rate limit of a fresh key."""
    defaults = Settings()
    created = post(client, key, **datasets).json()
    assert created["counts"]["total"] == 27 <= min(defaults.max_active_jobs, defaults.max_comparison_jobs)
    assert created["counts"]["total"] <= defaults.create_burst - 2  # after the two uploads
    cancel_all(client, key)


def test_too_large_names_the_count_and_the_limit(client, key, datasets):
    error = post(client, key, expect=400, **datasets, seeds=10).json()["error"]
    assert "90 jobs" in error["message"] and "60" in error["message"] and "UDS_MAX_COMPARISON_JOBS" in error["message"]


def test_the_tenants_cap_on_unfinished_jobs_counts_all_the_jobs(database_url, tmp_path, key):
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", broker_url=None, require_auth=True, min_examples=2,
        max_upload_bytes=64 * 1024, bootstrap_api_key=None, max_active_jobs=5,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        train = upload(client, key, jsonl(labelled_rows())).json()
        held_out = upload(client, key, jsonl(chat_rows(3))).json()
        body = dict(dataset_id=train["id"], eval_dataset_id=held_out["id"], methods=["random"], budgets=[0.25])
        error = post(client, key, expect=400, **body, seeds=3).json()["error"]  # 3 x 2 = 6 > 5
        assert error["code"] == "too_many_active_jobs" and "UDS_MAX_ACTIVE_JOBS=5" in error["message"]
        assert_nothing_left(client, key)
        assert len(post(client, key, **body, seeds=2).json()["runs"]) == 4  # 4 fit
        cancel_all(client, key)


def cancel_all(client, key) -> None:
    for comparison in get(client, key, "/comparisons")["data"]:
        client.post(f"/api/v1/comparisons/{comparison['id']}/cancel", headers=bearer(key))


class RecordingDispatcher:
    mode = "embedded"

    def __init__(self):
        self.sent: list[str] = []

    def enqueue(self, job_id: str, devices: int = 1) -> None:
        self.sent.append(job_id)

    def enqueue_task(self, task_id: str) -> None:
        pass

    def ping(self) -> None:
        pass


def test_defaults_dispatch_seed_by_seed_then_cancel_and_delete(client, key, datasets, settings):
    client.app.state.dispatcher = dispatcher = RecordingDispatcher()
    created = post(client, key, **datasets, seeds=2, metadata={"team": "a"})
    comparison = created.json()
    assert comparison["id"].startswith("cmp-") and len(comparison["id"]) == 28
    assert comparison["methods"] == ["uds", "random", "max_loss", "max_grad"] and comparison["budgets"] == [0.125, 0.25]
    assert comparison["include_full"] is True and comparison["model"] == "uds-tiny" and comparison["settings"] == {}
    assert comparison["status"] == "queued" and comparison["counts"]["queued"] == comparison["counts"]["total"] == 18
    assert comparison["metadata"] == {"team": "a"} and comparison["finished_at"] is None
    # All of seed 0's runs are sent before any of seed 1's, in the order listed.
    assert dispatcher.sent == [r["job_id"] for r in comparison["runs"]]
    assert [r["seed"] for r in comparison["runs"]] == [0] * 9 + [1] * 9
    assert comparison["runs"][0]["method"] == "uds" and comparison["runs"][8]["method"] == "full"
    listed = get(client, key, "/comparisons")
    assert [c["id"] for c in listed["data"]] == [comparison["id"]] and listed["data"][0]["counts"]["total"] == 18

    report = get(client, key, f"/comparisons/{comparison['id']}/report")
    assert (report["complete"], report["runs_done"], report["runs_total"]) == (False, 0, 18)
    assert report["differences"] == [] and report["labels"] is None
    assert [r["n"] for r in report["rows"]] == [0] * 9 and report["rows"][0]["eval_loss"] is None
    assert report["notes"] == ["Waiting for 18 of 18 runs."]

    deleting = client.delete(f"/api/v1/comparisons/{comparison['id']}", headers=bearer(key))
    assert deleting.status_code == 409 and deleting.json()["error"]["code"] == "comparison_not_finished"

    # One run cancelled on its own: the comparison is still waiting, as nothing of it has started.
    client.post(f"/api/v1/jobs/{comparison['runs'][0]['job_id']}/cancel", headers=bearer(key))
    one_less = get(client, key, f"/comparisons/{comparison['id']}")
    assert one_less["status"] == "queued" and one_less["counts"]["cancelled"] == 1

    cancelled = client.post(f"/api/v1/comparisons/{comparison['id']}/cancel", headers=bearer(key)).json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 18
    assert cancelled["finished_at"] is not None
    again = client.post(f"/api/v1/comparisons/{comparison['id']}/cancel", headers=bearer(key))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    report = get(client, key, f"/comparisons/{comparison['id']}/report")
    assert report["complete"] is True and report["notes"] == [
        "18 runs were cancelled and are left out of the paired differences."
    ]
    # Its runs go with it, never one by one: the report would go on counting runs that are gone.
    for run in comparison["runs"][:2]:
        alone = client.delete(f"/api/v1/jobs/{run['job_id']}", headers=bearer(key))
        assert alone.status_code == 409 and alone.json()["error"]["code"] == "job_in_comparison", alone.text
        assert comparison["id"] in alone.json()["error"]["message"]
    assert get(client, key, f"/comparisons/{comparison['id']}")["counts"]["total"] == 18

    deleted = client.delete(f"/api/v1/comparisons/{comparison['id']}", headers=bearer(key))
    assert deleted.status_code == 200 and deleted.json() == {
        "id": comparison["id"],
        "object": "comparison",
        "deleted": True,
    }
    assert client.get(f"/api/v1/comparisons/{comparison['id']}", headers=bearer(key)).status_code == 404
    assert_nothing_left(client, key)


def test_pagination_newest_first(client, key, datasets):
    body = dict(**datasets, methods=["random"], budgets=[0.5], include_full=False)
    ids = [post(client, key, **body, name=f"c{i}").json()["id"] for i in range(3)]
    first = get(client, key, "/comparisons", limit=2)
    assert [c["id"] for c in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = get(client, key, "/comparisons", limit=2, after=first["last_id"])
    assert [c["id"] for c in rest["data"]] == ids[:1] and rest["has_more"] is False
    cancel_all(client, key)


# ---- a running comparison ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_running_comparison_cannot_be_deleted_until_cancelled(
    client, key, settings, tiny_model_dir, tmp_path, monkeypatch
):
    with_tiny_model(settings.data_dir, tiny_model_dir)
    train = upload(client, key, jsonl(labelled_rows())).json()
    held_out = upload(client, key, jsonl(chat_rows(3))).json()
    comparison = post(
        client,
        key,
        dataset_id=train["id"],
        eval_dataset_id=held_out["id"],
        methods=["random"],
        budgets=[0.25],
        include_full=False,
        seeds=2,
        settings=SHARED,
    ).json()
    first, second = (r["job_id"] for r in comparison["runs"])
    # The first job waits after its step 1 (tests/utils/hold.py), in the worker's own runner, until cancelled.
    hold = StepHold(tmp_path, step=1)
    monkeypatch.setattr(DbLogger, "log_step", DbLogger.log_step)  # restored after the test
    install(hold.step, str(hold.release_file))
    outcome: list[str | None] = []
    worker = threading.Thread(target=lambda: outcome.append(run_job(first, "w:hold", settings)))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while get(client, key, f"/jobs/{first}")["progress"]["step"] < 1:
            assert time.monotonic() < deadline, "the job never reached its held step"
            time.sleep(0.1)
        running = get(client, key, f"/comparisons/{comparison['id']}")
        assert running["status"] == "running" and running["counts"]["running"] == 1
        report = get(client, key, f"/comparisons/{comparison['id']}/report")
        assert report["complete"] is False and report["notes"] == ["Waiting for 2 of 2 runs."]

        response = client.delete(f"/api/v1/comparisons/{comparison['id']}", headers=bearer(key))
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "comparison_not_finished" and first in error["message"]

        cancelled = client.post(f"/api/v1/comparisons/{comparison['id']}/cancel", headers=bearer(key)).json()
        statuses = {r["job_id"]: r["status"] for r in cancelled["runs"]}
        assert statuses[second] == "cancelled"  # it had not started
        assert get(client, key, f"/jobs/{first}")["cancel_requested"] is True
        worker.join(60)  # never released: the held job stops because its cancellation is seen
        assert outcome == ["cancelled"]
    finally:
        hold.release()
        worker.join(120)
    assert get(client, key, f"/comparisons/{comparison['id']}")["status"] == "cancelled"
    assert settings.job_dir(first).exists()
    response = client.delete(f"/api/v1/comparisons/{comparison['id']}", headers=bearer(key))
    assert response.status_code == 200, response.text
    for job_id in (first, second):
        assert client.get(f"/api/v1/jobs/{job_id}", headers=bearer(key)).status_code == 404
    assert not settings.job_dir(first).exists()

"""Tenancy over every endpoint of both APIs, enumerated from the app itself: a route added later without a
place in this matrix fails the test. Tenant A can list, read, cancel, delete or download nothing of tenant B's
(404 with the same body as for an id that never existed), and B's objects are untouched afterwards.
Also: a revoked key stops working at the very next request (`uds keys revoke`).
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import update

from api.db import session_factory
from api.models import Checkpoint, Job, JobTask, utcnow
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload

# Routes that take no id of an object: what A gets must mention nothing of B's.
LISTS = {
    ("GET", "/api/v1/datasets"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/info"),
    ("GET", "/v1/files"),
    ("GET", "/v1/fine_tuning/jobs"),
    ("GET", "/v1/models"),
    ("GET", "/api/v1/webhooks"),
    ("GET", "/api/v1/comparisons"),
}
# Routes that create objects of the caller's own tenant: given B's ids they must answer 404 (or not take ids).
CREATES = {
    ("POST", "/api/v1/datasets"),
    ("POST", "/v1/files"),
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/estimate"),  # creates nothing, but takes the same ids as POST /api/v1/jobs
    ("POST", "/v1/fine_tuning/jobs"),
    ("POST", "/api/v1/webhooks"),
    ("POST", "/api/v1/comparisons"),
}


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route of both APIs, those hidden from the OpenAPI document included."""
    found = []
    for route in app.routes:
        # FastAPI >= 0.16x keeps included routers as one entry each; older versions list APIRoutes directly.
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for r in contexts:
            path, methods = getattr(r, "path", ""), getattr(r, "methods", None) or set()
            if path.startswith("/api/v1/") or path.startswith("/v1/"):
                found += [(method, path) for method in sorted(set(methods) - {"HEAD"})]
    # Cross-check with the OpenAPI document, so a change in FastAPI's internals cannot make this list short.
    documented = {
        (m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops if p.startswith(("/api/v1/", "/v1/"))
    }
    normalised = {(m, re.sub(r":path\}", "}", p)) for m, p in found}
    assert documented <= normalised, documented - normalised
    return found


def make_victim(client, settings, database_url):
    """Tenant B with a dataset, a succeeded job (adapter on disk, metrics, a checkpoint), a running job and a
    comparison (its jobs queued)."""
    tenant_b, key_b = new_tenant_key(database_url)
    dataset = upload(client, key_b, jsonl(chat_rows(4))).json()
    done = create_job(client, key_b, dataset["id"], suffix="secret").json()
    running = create_job(client, key_b, dataset["id"]).json()
    archive = settings.data_dir / "jobs" / done["id"] / "adapter.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"not really a tarball")
    model_name = f"ft:uds-tiny:{tenant_b}:secret:{done['id']}"
    sessions = session_factory(database_url)
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == done["id"])
            .values(
                status="succeeded",
                finished_at=utcnow(),
                adapter_path=f"jobs/{done['id']}/adapter.tar.gz",
                adapter_bytes=archive.stat().st_size,
                adapter_sha256="0" * 64,
                fine_tuned_model=model_name,
                current_step=1,
            )
        )
        session.execute(
            update(Job)
            .where(Job.id == running["id"])
            .values(status="running", worker_id="w:1:a", heartbeat_at=utcnow())
        )
        session.add(
            Checkpoint(
                job_id=done["id"],
                step=1,
                path=f"jobs/{done['id']}/checkpoints/step-00000001",
                metrics={"loss": 1.0},
                created_at=utcnow(),
            )
        )
        # A merged export and a try-it generation of B's finished job, as a worker leaves them.
        export_id, generation_id = "export-" + secrets.token_hex(12), "gen-" + secrets.token_hex(12)
        for task_id, kind, params in (
            (export_id, "export", {"kind": "merged"}),
            (
                generation_id,
                "generate",
                {"messages": [{"role": "user", "content": "secret prompt"}], "max_new_tokens": 4, "temperature": 0},
            ),
        ):
            session.add(
                JobTask(
                    id=task_id,
                    tenant_id=session.get(Job, done["id"]).tenant_id,
                    job_id=done["id"],
                    kind=kind,
                    status="running",
                    params=params,
                    cancel_requested=False,
                    created_at=utcnow(),
                )
            )
    webhook = client.post("/api/v1/webhooks", headers=bearer(key_b), json={"url": "http://127.0.0.1:9/b-secret-hook"})
    assert webhook.status_code == 201, webhook.text
    comparison = client.post(
        "/api/v1/comparisons",
        headers=bearer(key_b),
        json={
            "dataset_id": dataset["id"],
            "eval_dataset_id": dataset["id"],
            "methods": ["random"],
            "budgets": [0.5],
            "seeds": 2,
            "include_full": False,
        },
    )
    assert comparison.status_code == 201, comparison.text
    files = client.get("/v1/files", headers=bearer(key_b)).json()["data"]
    result_files = [f["id"] for f in files if f["purpose"] != "fine-tune"]
    assert result_files  # the succeeded job's metrics CSV and adapter, as OpenAI result files
    return {
        "key": key_b,
        "tenant": tenant_b,
        "dataset": dataset["id"],
        "done": done["id"],
        "running": running["id"],
        "model": model_name,
        "result_files": result_files,
        "export": export_id,
        "generation": generation_id,
        "webhook": webhook.json()["id"],
        "comparison": comparison.json()["id"],
    }


def check_unknown_file(client, method, path, headers, body, victim_id) -> None:
    """Naming B's dataset in a job of A's is answered exactly as naming a dataset that never existed: 404 in the
    native API; 400 `file_not_found` in the OpenAI one, as OpenAI answers an unknown training file."""
    response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == (404 if path.startswith("/api/") else 400), (method, path, response.text)
    assert response.json()["error"]["code"] in ("dataset_not_found", "file_not_found"), response.text
    never = "file-" + "0" * 24
    other = client.request(
        method, path, headers=headers, json={k: (never if v == victim_id else v) for k, v in body.items()}
    )
    assert other.status_code == response.status_code
    assert other.json()["error"]["message"] == response.json()["error"]["message"].replace(victim_id, never)


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: values[m.group(1)], path)


def test_tenant_a_reaches_nothing_of_tenant_b_on_any_route(client, settings, database_url):
    b = make_victim(client, settings, database_url)
    _, key_a = new_tenant_key(database_url)
    a = bearer(key_a)
    own = upload(
        client, key_a, jsonl(chat_rows(4))
    ).json()  # A has things of its own, so its lists are not trivially empty
    secrets = [
        b["dataset"],
        b["done"],
        b["running"],
        b["model"],
        b["tenant"],
        *b["result_files"],
        b["export"],
        b["generation"],
        "secret prompt",
        b["webhook"],
        "b-secret-hook",
        b["comparison"],
    ]

    routes = api_routes(client.app)
    assert len(routes) >= 25, routes
    unclassified = []
    for method, path in routes:
        params = set(re.findall(r"\{(\w+)", path))
        if not params:
            if (method, path) in LISTS:
                response = client.request(method, path, headers=a)
                assert response.status_code == 200, (method, path, response.text)
                assert not any(s in response.text for s in secrets), (method, path, response.text)
            elif (method, path) in CREATES:
                if path.endswith(("jobs", "jobs/estimate")):
                    body = (
                        {"dataset_id": b["dataset"], "model": "uds-tiny"}
                        if path.startswith("/api")
                        else {"training_file": b["dataset"], "model": "uds-tiny"}
                    )
                    check_unknown_file(client, method, path, a, body, b["dataset"])
                    # B's dataset as the evaluation file of A's own job: 404 too.
                    body["validation_file" if path.startswith("/v1") else "eval_dataset_id"] = b["dataset"]
                    body["training_file" if path.startswith("/v1") else "dataset_id"] = own["id"]
                    check_unknown_file(client, method, path, a, body, b["dataset"])
                elif path.endswith("comparisons"):  # B's dataset to train on, then to judge on: 404 both
                    body = {"dataset_id": b["dataset"], "eval_dataset_id": own["id"]}
                    check_unknown_file(client, method, path, a, body, b["dataset"])
                    body = {"dataset_id": own["id"], "eval_dataset_id": b["dataset"]}
                    check_unknown_file(client, method, path, a, body, b["dataset"])
                # uploads create A's own dataset from A's bytes; nothing of B's can be named in them
            else:
                unclassified.append((method, path))
            continue
        # Every id a route takes, set to each of B's objects of that kind.
        candidates = {
            "dataset_id": [b["dataset"]],
            "file_id": [b["dataset"], *b["result_files"]],
            "job_id": [b["done"], b["running"]],
            "model_id": [b["model"]],
            "export_id": [b["export"]],
            "generation_id": [b["generation"]],
            "webhook_id": [b["webhook"]],
            "comparison_id": [b["comparison"]],
        }
        if not params <= set(candidates):
            unclassified.append((method, path))
            continue
        (param,) = params
        for value in candidates[param]:
            response = client.request(method, fill(path, {param: value}), headers=a)
            assert response.status_code == 404, (method, path, value, response.text)
            assert not any(s in response.text for s in secrets if s not in value), (method, path, response.text)
            # Indistinguishable from an id that never existed (no existence oracle).
            never = {
                "dataset_id": "file-" + "0" * 24,
                "file_id": "file-" + "0" * 24,
                "job_id": "ftjob-" + "0" * 24,
                "model_id": "ft:uds-tiny:x:y:ftjob-" + "0" * 24,
                "export_id": "export-" + "0" * 24,
                "generation_id": "gen-" + "0" * 24,
                "webhook_id": "wh_" + "0" * 24,
                "comparison_id": "cmp-" + "0" * 24,
            }[param]
            other = client.request(method, fill(path, {param: never}), headers=a)
            assert other.status_code == 404 and other.json()["error"]["code"] == response.json()["error"]["code"]
    assert not unclassified, f"routes missing from the tenancy matrix: {unclassified}"

    # B's objects are exactly as they were: nothing cancelled, deleted or changed by A's attempts.
    kb = bearer(b["key"])
    assert client.get(f"/api/v1/datasets/{b['dataset']}", headers=kb).status_code == 200
    assert client.get(f"/api/v1/jobs/{b['done']}", headers=kb).json()["status"] == "succeeded"  # A's DELETE did nothing
    running = client.get(f"/api/v1/jobs/{b['running']}", headers=kb).json()
    assert running["status"] == "running" and running["cancel_requested"] is False
    generation = client.get(f"/api/v1/generations/{b['generation']}", headers=kb).json()
    assert generation["status"] == "running" and generation["cancel_requested"] is False  # A's cancel did nothing
    assert client.get(f"/api/v1/jobs/{b['done']}/exports", headers=kb).json()["data"][0]["id"] == b["export"]
    assert client.get(f"/api/v1/jobs/{b['done']}/adapter", headers=kb).status_code == 200
    assert client.get(f"/api/v1/webhooks/{b['webhook']}", headers=kb).status_code == 200  # A's DELETE did nothing
    comparison = client.get(f"/api/v1/comparisons/{b['comparison']}", headers=kb).json()  # A's cancel, DELETE: nothing
    assert comparison["status"] == "queued" and comparison["counts"]["queued"] == 2
    for file_id in b["result_files"]:
        assert client.get(f"/v1/files/{file_id}/content", headers=kb).status_code == 200


def test_revoked_key_stops_working_at_once(client, settings, database_url, capsys):
    from api.settings import Settings
    from cli.keys import keys_create, keys_revoke

    cli_settings = Settings(database_url=database_url, data_dir=settings.data_dir)
    assert keys_create("revocation", settings=cli_settings) == 0
    key = capsys.readouterr().out.strip()
    other = new_tenant_key(database_url, "revocation")[1]  # a second key of the same tenant
    assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 200
    assert client.get("/v1/files", headers=bearer(key)).status_code == 200

    assert keys_revoke(key[:10], settings=cli_settings) == 0  # by its prefix, as `uds keys list` shows it
    assert "revoked" in capsys.readouterr().out
    for path in ("/api/v1/datasets", "/v1/files", "/v1/fine_tuning/jobs"):
        response = client.get(path, headers=bearer(key))
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/api/v1/datasets", headers=bearer(other)).status_code == 200  # only that key
    assert keys_revoke(key[:10], settings=cli_settings) == 1  # nothing left to revoke: a clear error
    assert keys_revoke("uds-", settings=cli_settings) == 2  # too short a prefix to be unambiguous

"""API keys and tenancy: 401 without a valid key, 404 (never 403) for another tenant's objects."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.auth import hash_key
from api.db import session_factory
from api.main import create_app
from api.models import ApiKey, Job, utcnow
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload

LOCAL = "http://127.0.0.1:8000"  # key-less mode answers only to loopback Host names (api/origin.py)


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer uds-not-a-real-key-0000000000"}, "invalid_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_api_key"),
        ({"Authorization": "Bearer"}, "invalid_api_key"),
    ],
)
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/datasets"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/ftjob-x"),
        ("POST", "/api/v1/datasets"),
        ("GET", "/api/v1/models"),
    ],
)
def test_missing_or_wrong_key_is_401(client, headers, code, method, path):
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "authentication_error",
            "param": None,
            "code": code,
        }
    }
    assert response.headers["www-authenticate"] == "Bearer"


def test_keys_are_stored_hashed_and_can_be_revoked(client, database_url, key):
    with session_factory(database_url)() as session:
        stored = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
        assert stored is not None and key not in (stored.key_hash, stored.prefix) and key.startswith(stored.prefix)
    assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 200
    with session_factory(database_url).begin() as session:
        session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=utcnow()))
    assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 401


def test_tenants_see_only_their_own(client, database_url, settings):
    _, key_a = new_tenant_key(database_url)
    _, key_b = new_tenant_key(database_url)
    dataset = upload(client, key_a, jsonl(chat_rows(4))).json()
    job = create_job(client, key_a, dataset["id"]).json()
    with session_factory(database_url).begin() as session:  # give it an adapter-looking state too
        session.execute(update(Job).where(Job.id == job["id"]).values(status="succeeded", adapter_path="x.tar.gz"))

    for method, path in [
        ("GET", f"/api/v1/datasets/{dataset['id']}"),
        ("DELETE", f"/api/v1/datasets/{dataset['id']}"),
        ("GET", f"/api/v1/datasets/{dataset['id']}/rows"),
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("POST", f"/api/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/api/v1/jobs/{job['id']}/metrics"),
        ("GET", f"/api/v1/jobs/{job['id']}/selections"),
        ("GET", f"/api/v1/jobs/{job['id']}/selections/summary"),
        ("GET", f"/api/v1/jobs/{job['id']}/events"),
        ("GET", f"/api/v1/jobs/{job['id']}/checkpoints"),
        ("GET", f"/api/v1/jobs/{job['id']}/adapter"),
    ]:
        response = client.request(method, path, headers=bearer(key_b))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in ("dataset_not_found", "job_not_found")
        # The same body as for an id that never existed: no way to probe for others' ids.
        fake = path.replace(dataset["id"], "file-" + "0" * 24).replace(job["id"], "ftjob-" + "0" * 24)
        other = client.request(method, fake, headers=bearer(key_b)).json()["error"]
        assert other["code"] == response.json()["error"]["code"]

    assert client.get("/api/v1/datasets", headers=bearer(key_b)).json()["data"] == []
    assert client.get("/api/v1/jobs", headers=bearer(key_b)).json()["data"] == []
    assert create_job(client, key_b, dataset["id"], expect=404).json()["error"]["param"] == "dataset_id"
    assert client.get("/api/v1/datasets", headers=bearer(key_b), params={"after": dataset["id"]}).status_code == 400
    # and A still has everything
    assert client.get(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key_a)).status_code == 200


def test_bootstrap_key(database_url, tmp_path):
    key = "uds-bootstrap-key-for-tests-0123456789"
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        require_auth=True,
        bootstrap_api_key=key,
        bootstrap_tenant="compose",
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 200
        assert client.get("/api/v1/info").json()["auth_required"] is True
    with TestClient(create_app(settings)) as client:  # a restart with the same key is fine
        assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 200


def test_loopback_default_needs_no_key(database_url, tmp_path):
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, require_auth="auto", host="127.0.0.1", min_examples=2
    )
    assert settings.auth_required is False
    with TestClient(create_app(settings), client=("127.0.0.1", 50000), base_url=LOCAL) as local:
        dataset = upload(local, None, jsonl(chat_rows(3))).json()
        assert local.get(f"/api/v1/datasets/{dataset['id']}").status_code == 200
        assert local.get("/api/v1/info").json()["auth_required"] is False
        _, key = new_tenant_key(database_url)  # a key still selects its own tenant
        assert local.get(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 404
    # Bound to loopback, yet the request came from elsewhere (a proxy): a key is required.
    with TestClient(create_app(settings), client=("10.1.2.3", 50000), base_url=LOCAL) as remote:
        assert remote.get("/api/v1/datasets").status_code == 401


def test_non_loopback_bind_requires_keys(database_url, tmp_path):
    settings = Settings(database_url=database_url, data_dir=tmp_path, require_auth="auto", host="0.0.0.0")
    assert settings.auth_required is True
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        assert client.get("/api/v1/datasets").status_code == 401
    from cli.service import serve

    assert serve(settings=settings.model_copy(update={"require_auth": False})) == 2  # refuses to start


def test_keys_create_prints_a_working_key(database_url, tmp_path, capsys, client):
    from cli.keys import keys_create

    settings = Settings(database_url=database_url, data_dir=tmp_path)
    assert keys_create("cli-tenant", settings=settings) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("uds-") and len(key) > 40
    assert client.get("/api/v1/datasets", headers=bearer(key)).status_code == 200

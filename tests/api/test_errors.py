"""Every 4xx/5xx has one shape, including FastAPI's own validation and routing errors; health endpoints."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from tests.utils.factories import bearer


def assert_error(response, status: int, code: str | None = None, param: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "problems"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]


def test_error_shapes(client, key):
    assert_error(client.get("/api/v1/nothing-here", headers=bearer(key)), 404, "not_found")
    assert_error(client.put("/api/v1/datasets", headers=bearer(key)), 405, "method_not_allowed")
    assert_error(client.get("/api/v1/jobs/ftjob-000000000000000000000000", headers=bearer(key)), 404, "job_not_found", "id")
    assert_error(client.get("/api/v1/datasets", headers=bearer(key), params={"limit": 0}), 400, "invalid_value", "limit")
    assert_error(client.get("/api/v1/datasets", headers=bearer(key), params={"limit": "ten"}), 400, "invalid_value", "limit")
    error = assert_error(client.post("/api/v1/jobs", headers={**bearer(key), "Content-Type": "application/json"},
                                     content=b"{not json"), 400)
    assert error["type"] == "invalid_request_error"
    assert_error(client.post("/api/v1/jobs", headers=bearer(key), json={"model": "uds-tiny"}), 400,
                 "missing_required_parameter", "dataset_id")


def test_unexpected_errors_are_500_with_the_shape(settings, key, monkeypatch):
    from api.routes import datasets
    from tests.utils.factories import chat_rows, jsonl, upload

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        upload(client, key, jsonl(chat_rows(3)))

        def boom(*_args, **_kwargs):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(datasets, "dataset_public", boom)
        error = assert_error(client.get("/api/v1/datasets", headers=bearer(key)), 500, "internal_error")
        assert "secret" not in error["message"] and error["type"] == "server_error"


def test_health_info_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    info = client.get("/api/v1/info").json()
    assert info["auth_required"] is True and info["version"] and info["mode"] == "embedded" and "uds-tiny" in info["models"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/datasets", "/api/v1/jobs", "/api/v1/jobs/{job_id}/metrics", "/api/v1/jobs/{job_id}/adapter",
                 "/api/v1/jobs/{job_id}/selections/summary", "/api/v1/models", "/readyz"):
        assert path in paths
    upload_body = paths["/api/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in upload_body["schema"]["properties"]


def test_readyz_reports_an_unreachable_broker(settings):
    from tests.utils.service import free_port

    broken = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")
        assert body["error"]["code"] == "not_ready"

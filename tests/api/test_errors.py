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
    assert_error(
        client.get("/api/v1/jobs/ftjob-000000000000000000000000", headers=bearer(key)), 404, "job_not_found", "id"
    )
    assert_error(
        client.get("/api/v1/datasets", headers=bearer(key), params={"limit": 0}), 400, "invalid_value", "limit"
    )
    assert_error(
        client.get("/api/v1/datasets", headers=bearer(key), params={"limit": "ten"}), 400, "invalid_value", "limit"
    )
    error = assert_error(
        client.post("/api/v1/jobs", headers={**bearer(key), "Content-Type": "application/json"}, content=b"{not json"),
        400,
    )
    assert error["type"] == "invalid_request_error"
    assert_error(
        client.post("/api/v1/jobs", headers=bearer(key), json={"model": "uds-tiny"}),
        400,
        "missing_required_parameter",
        "dataset_id",
    )


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
    assert (
        info["auth_required"] is True
        and info["version"]
        and info["mode"] == "embedded"
        and "uds-tiny" in info["models"]
        and info["max_comparison_jobs"] == 60  # the form warns before a comparison over the deployment's limit
    )
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/datasets",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}/metrics",
        "/api/v1/jobs/{job_id}/adapter",
        "/api/v1/jobs/{job_id}/selections/summary",
        "/api/v1/models",
        "/readyz",
    ):
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


# Where a JSON syntax error is, which field was meant, and which query parameters are unknown.

JSON_HEADERS = {"Content-Type": "application/json"}


def test_a_json_syntax_error_says_line_and_column_not_a_byte_offset(client, key):
    body = b'{\n  "dataset_id": "file-x",\n  "model": "uds-tiny"\n  "budget": 0.5\n}'
    error = assert_error(
        client.post("/api/v1/jobs", headers={**bearer(key), **JSON_HEADERS}, content=body), 400, "invalid_json"
    )
    assert error["message"] == "invalid JSON in the request body at line 4 column 3: Expecting ',' delimiter"
    assert error["param"] is None
    error = assert_error(
        client.post("/v1/fine_tuning/jobs", headers={**bearer(key), **JSON_HEADERS}, content=b'{"model": "uds-tiny",}'),
        400,
        "invalid_json",
    )
    assert error["message"].startswith("invalid JSON in the request body at line 1 column 22: ")


def test_an_unknown_field_suggests_the_closest_known_name(client, key):
    error = assert_error(
        client.post(
            "/api/v1/jobs", headers=bearer(key), json={"dataset_id": "file-x", "model": "uds-tiny", "n_epochs": 2}
        ),
        400,
        "unknown_parameter",
        "n_epochs",
    )
    assert error["message"] == "n_epochs: Extra inputs are not permitted (did you mean 'epochs'?)"
    error = assert_error(
        client.post("/api/v1/jobs", headers=bearer(key), json={"dataset_id": "file-x", "model": "uds-tiny", "zzzz": 2}),
        400,
        "unknown_parameter",
        "zzzz",
    )
    assert "did you mean" not in error["message"]


def test_unknown_query_parameters_on_list_endpoints_are_400s_naming_them(client, key):
    error = assert_error(
        client.get("/api/v1/jobs", headers=bearer(key), params={"stauts": "failed", "limit": 5}),
        400,
        "unknown_parameter",
        "stauts",
    )
    assert (
        "'stauts' (did you mean 'status'?)" in error["message"]
        and "after, limit, metadata..., status" in error["message"]
    )
    for path in ("/api/v1/datasets", "/api/v1/models", "/v1/files", "/v1/fine_tuning/jobs", "/v1/models"):
        assert_error(client.get(path, headers=bearer(key), params={"limt": 5}), 400, "unknown_parameter", "limt")
    # What a route reads itself stays accepted: the metadata filter of both job lists.
    assert client.get("/v1/fine_tuning/jobs", headers=bearer(key), params={"metadata[team]": "x"}).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(key), params={"metadata[team]": "x"}).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(key), params={"status": "failed", "limit": 5}).status_code == 200

"""`integrations` on POST /api/v1/jobs: stored and shown on the job, validated by type, and a tracker URI this
deployment must not call (file:, loopback, non-http) refused with a 400 naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload

MLFLOW = {"type": "mlflow", "tracking_uri": "http://127.0.0.1:5000", "experiment": "e"}
WANDB = {"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}


def test_integrations_are_stored_and_shown(client, key):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]
    job = create_job(client, key, dataset, integrations=[MLFLOW, WANDB]).json()
    shown = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(key)).json()["integrations"]
    assert shown == [
        {**MLFLOW, "run_name": None},
        {"type": "wandb", "wandb": {"project": "p", "name": None, "entity": None, "tags": ["a"]}},
    ]
    assert "integrations" not in shown[0] and "integrations" not in job["config"]  # not a training setting


@pytest.mark.parametrize(
    "integration, param",
    [
        ({"type": "neptune", "project": "x"}, "integrations.0"),
        ({"type": "mlflow", "experiment": "e"}, "integrations.0.mlflow.tracking_uri"),
        ({"type": "wandb", "wandb": {"project": "p", "api_key": "k"}}, "integrations.0.wandb.wandb.api_key"),
    ],
)
def test_malformed_integrations_are_400_naming_the_field(client, key, integration, param):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]
    response = create_job(client, key, dataset, expect=400, integrations=[integration])
    assert response.json()["error"]["param"] == param, response.text


@pytest.mark.parametrize("uri", ["file:///srv/other-tenant", "http://127.0.0.1:5000", "ftp://example.com/x"])
def test_a_shared_deployment_refuses_local_tracker_uris(database_url, settings, uri):
    shared = settings.model_copy(update={"host": "0.0.0.0"})
    _, key = new_tenant_key(database_url)
    with TestClient(create_app(shared)) as api:
        dataset = upload(api, key, jsonl(chat_rows(4))).json()["id"]
        response = create_job(api, key, dataset, expect=400, integrations=[{**MLFLOW, "tracking_uri": uri}])
    assert response.json()["error"]["param"] == "integrations[0].tracking_uri", response.text

"""NaN stored in job metadata by an older version on SQLite (where the JSON column is text and Python writes `NaN`,
which is not JSON) must neither make the tenant's metadata-filtered lists a 500 nor block deletes.
Postgres' JSONB never took NaN, so there is nothing to hold there."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from api.db import session_factory
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload


@pytest.fixture
def poisoned_job(client, key, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("JSONB refuses NaN: only SQLite can hold it")
    dataset = upload(client, key, jsonl(chat_rows(4))).json()
    job = create_job(client, key, dataset["id"], metadata={"team": "a"}).json()
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(key))
    with session_factory(database_url)() as session:  # as an older version wrote it
        session.execute(
            text("UPDATE jobs SET metadata = :raw WHERE id = :id"),
            {"raw": '{"team": "a", "score": NaN}', "id": job["id"]},
        )
        session.commit()
    return {"job": job, "dataset": dataset}


def test_metadata_filtered_lists_skip_unreadable_metadata(client, key, poisoned_job):
    other = create_job(client, key, poisoned_job["dataset"]["id"], metadata={"team": "b"}).json()
    response = client.get("/v1/fine_tuning/jobs", headers=bearer(key), params={"metadata[team]": "b"})
    assert response.status_code == 200, response.text
    assert [j["id"] for j in response.json()["data"]] == [other["id"]]
    response = client.get("/v1/fine_tuning/jobs", headers=bearer(key), params={"metadata": "null"})
    assert response.status_code == 200, response.text
    client.post(f"/api/v1/jobs/{other['id']}/cancel", headers=bearer(key))


def test_jobs_and_datasets_with_unreadable_metadata_still_read_and_delete(client, key, poisoned_job):
    job_id, dataset_id = poisoned_job["job"]["id"], poisoned_job["dataset"]["id"]
    for url in (f"/api/v1/jobs/{job_id}", f"/v1/fine_tuning/jobs/{job_id}", "/api/v1/jobs", "/v1/fine_tuning/jobs"):
        assert client.get(url, headers=bearer(key)).status_code == 200, url
    assert client.delete(f"/api/v1/datasets/{dataset_id}", headers=bearer(key)).status_code == 200


def test_native_metadata_filter_and_job_delete_with_unreadable_metadata(client, key, poisoned_job):
    job_id = poisoned_job["job"]["id"]
    other = create_job(client, key, poisoned_job["dataset"]["id"], metadata={"team": "b"}).json()
    response = client.get("/api/v1/jobs", headers=bearer(key), params={"metadata[team]": "b"})
    assert response.status_code == 200, response.text
    assert [j["id"] for j in response.json()["data"]] == [other["id"]]
    client.post(f"/api/v1/jobs/{other['id']}/cancel", headers=bearer(key))
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=bearer(key)).status_code == 200  # cancelled: deletable
    assert client.get(f"/api/v1/jobs/{job_id}", headers=bearer(key)).status_code == 404

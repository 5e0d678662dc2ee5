"""The native job API takes JSON types as they are: a boolean is not an integer and a string is
not a number, so such a body is a 400 naming the field instead of a job that trains on a coerced value."""

from __future__ import annotations

import pytest

from tests.utils.factories import chat_rows, create_job, jsonl, upload


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(4))).json()


@pytest.mark.parametrize(
    "fields, param",
    [
        (dict(epochs=True), "epochs"),
        (dict(budget="0.5"), "budget"),
        (dict(max_steps="3"), "max_steps"),
        (dict(seed=1.5), "seed"),
        (dict(group_by_length="yes"), "group_by_length"),
        (dict(gradient_checkpointing=1), "gradient_checkpointing"),
    ],
)
def test_coercible_but_wrong_types_are_400(client, key, dataset, fields, param):
    response = create_job(client, key, dataset["id"], expect=None, **fields)
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or ""), response.json()


def test_an_integer_is_still_a_number(client, key, dataset):
    job = create_job(client, key, dataset["id"], budget=1, alpha=0, max_grad_norm=1).json()
    assert job["budget"] == 1.0
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(
    "fields, param",
    [
        (dict(max_new_tokens=True), "max_new_tokens"),
        (dict(seed=True), "seed"),
        (dict(temperature=True), "temperature"),
        (dict(max_new_tokens="8"), "max_new_tokens"),
    ],
)
def test_try_it_takes_json_types_as_they_are(client, key, dataset, database_url, fields, param):
    from api.db import session_factory
    from api.models import Job, utcnow

    job = create_job(client, key, dataset["id"]).json()["id"]
    with session_factory(database_url).begin() as session:
        session.get(Job, job).status, session.get(Job, job).finished_at = "succeeded", utcnow()
    response = client.post(
        f"/api/v1/jobs/{job}/generate", headers={"Authorization": f"Bearer {key}"}, json={"prompt": "hi", **fields}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_an_openai_seed_of_true_is_refused(client, key, dataset):
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "uds-tiny", "training_file": dataset["id"], "seed": True},
    )
    assert response.status_code == 400 and "seed" in (response.json()["error"]["param"] or ""), response.text

"""Conditional polling: ETag + If-None-Match -> 304 on the resources clients poll, only while nothing changed, only
after the same authentication and lookup as a 200, and never across tenants.

The job is moved by the test itself through the worker's real writer (DbLogger), one step at a time: nothing races.
"""

from __future__ import annotations

import pytest

from api.db import session_factory
from api.models import utcnow
from tests.api.test_jobs import set_job, step_metrics
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload
from worker.db_logger import DbLogger


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(20))).json()


@pytest.fixture
def running(client, key, dataset, settings):
    """A running job with two stored steps, and the worker's writer to move it on."""
    job = create_job(client, key, dataset["id"]).json()
    set_job(settings, job["id"], status="running", worker_id="w1", heartbeat_at=utcnow())
    logger = DbLogger(session_factory(settings.sqlalchemy_url), job["id"], "w1", flush_steps=100, flush_seconds=3600)
    for step in (1, 2):
        logger.log_step(step_metrics(step, [step, step + 1], {step}))
    logger.flush()
    yield job["id"], logger
    logger.close()


def poll(client, key, path: str, etag: str | None = None, **params):
    headers = {**bearer(key), **({"If-None-Match": etag} if etag else {})}
    return client.get(path, headers=headers, params=params)


def assert_not_modified(response, etag: str) -> None:
    assert response.status_code == 304, response.text
    assert response.content == b"" and response.headers["etag"] == etag
    assert "no-cache" in response.headers["cache-control"]


def first(client, key, path: str, **params) -> str:
    response = poll(client, key, path, **params)
    assert response.status_code == 200, response.text
    etag = response.headers["etag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    assert "no-cache" in response.headers["cache-control"] and "Authorization" in response.headers["vary"]
    assert_not_modified(poll(client, key, path, etag, **params), etag)
    return etag


def test_job_and_metrics_are_304_until_a_step_is_stored(client, key, running):
    job_id, logger = running
    job_url, metrics_url = f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/metrics"
    job_tag = first(client, key, job_url)
    metrics_tag = first(client, key, metrics_url, after_step=2)
    # The worker's heartbeat is not part of any answer: it changes no tag.
    set_job_heartbeat(client, job_id)
    assert_not_modified(poll(client, key, job_url, job_tag), job_tag)

    logger.log_step(step_metrics(3, [3, 4], {3}))
    logger.flush()
    job = poll(client, key, job_url, job_tag)
    assert job.status_code == 200 and job.json()["progress"]["step"] == 3 and job.headers["etag"] != job_tag
    page = poll(client, key, metrics_url, metrics_tag, after_step=2)
    assert page.status_code == 200 and [m["step"] for m in page.json()["data"]] == [3]
    assert page.headers["etag"] != metrics_tag
    # Another page of the same job is another answer, with its own tag.
    assert poll(client, key, metrics_url, metrics_tag, after_step=0).status_code == 200


def set_job_heartbeat(client, job_id: str) -> None:
    set_job(client.app.state.settings, job_id, heartbeat_at=utcnow())


def test_length_bias_is_304_until_a_step_is_stored(client, key, running):
    job_id, logger = running
    url = f"/api/v1/jobs/{job_id}/length-bias"
    tag = first(client, key, url)
    assert poll(client, key, url).json()["steps"] == 0  # the fixture's steps carry no length diagnostic
    step = step_metrics(3, [3, 4], {3})
    step["stats"]["length"] = {"mean_length_candidates": 10.0, "mean_length_selected": 12.0}
    logger.log_step(step)
    logger.flush()
    response = poll(client, key, url, tag)
    assert response.status_code == 200 and response.json()["steps"] == 1 and response.headers["etag"] != tag


def test_events_are_304_until_an_event_is_added(client, key, running):
    job_id, logger = running
    url = f"/api/v1/jobs/{job_id}/events"
    tag = first(client, key, url, limit=5)
    logger.log_event("note", "Something happened.")
    logger.flush()
    response = poll(client, key, url, tag, limit=5)
    assert response.status_code == 200 and response.json()["data"][0]["message"] == "Something happened."
    assert response.headers["etag"] != tag


def test_a_status_change_changes_the_job_and_the_list(client, key, dataset):
    job_id = create_job(client, key, dataset["id"]).json()["id"]
    job_tag = first(client, key, f"/api/v1/jobs/{job_id}")
    list_tag = first(client, key, "/api/v1/jobs")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(key)).status_code == 200
    job = poll(client, key, f"/api/v1/jobs/{job_id}", job_tag)
    assert job.status_code == 200 and job.json()["status"] == "cancelled"
    listed = poll(client, key, "/api/v1/jobs", list_tag)
    assert listed.status_code == 200 and listed.json()["data"][0]["status"] == "cancelled"
    # A new job changes the list too, and a filtered list is another answer.
    list_tag = listed.headers["etag"]
    create_job(client, key, dataset["id"])
    assert poll(client, key, "/api/v1/jobs", list_tag).status_code == 200
    assert poll(client, key, "/api/v1/jobs", list_tag, status="cancelled").status_code == 200


@pytest.mark.parametrize(
    "header, modified",
    [
        ("{tag}", False),
        ("{opaque}", False),  # the strong form of the same tag: If-None-Match compares weakly
        ('"other", {tag}', False),
        ('W/"a,b", {opaque} , "c"', False),  # a comma inside a quoted tag is part of it
        ("*", False),
        ('"other"', True),
        ('W/"other", "more"', True),
        ("{tag}x", True),  # malformed: ignored, the full answer
        ("not-a-tag", True),
        ("", True),
    ],
)
def test_if_none_match_forms(client, key, dataset, header, modified):
    job_id = create_job(client, key, dataset["id"]).json()["id"]
    url = f"/api/v1/jobs/{job_id}"
    tag = first(client, key, url)
    value = header.format(tag=tag, opaque=tag.removeprefix("W/"))
    response = client.get(url, headers={**bearer(key), "If-None-Match": value})
    assert response.status_code == (200 if modified else 304)
    assert response.headers["etag"] == tag


def test_no_304_without_the_same_authentication(client, key, dataset, database_url):
    job_id = create_job(client, key, dataset["id"]).json()["id"]
    url = f"/api/v1/jobs/{job_id}"
    tag = first(client, key, url)
    for star in (tag, "*"):
        missing = client.get(url, headers={"If-None-Match": star})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = client.get(url, headers={**bearer("uds-" + "x" * 43), "If-None-Match": star})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        # Another tenant: the job does not exist for it, whatever tag it sends.
        _, other = new_tenant_key(database_url)
        assert poll(client, other, url, star).status_code == 404


def test_tags_are_per_tenant(client, key, database_url):
    # Two tenants with the same (empty) list: the answers are equal, the tags are not.
    _, other = new_tenant_key(database_url)
    tag = first(client, key, "/api/v1/jobs")
    response = poll(client, other, "/api/v1/jobs", tag)
    assert response.status_code == 200 and response.json()["data"] == []
    assert response.headers["etag"] != tag


def test_comparison_and_report_are_304_until_a_run_moves(client, key, settings):
    train = upload(client, key, jsonl(chat_rows(16))).json()
    held_out = upload(client, key, jsonl(chat_rows(3)), filename="eval.jsonl").json()
    body = {"dataset_id": train["id"], "eval_dataset_id": held_out["id"], "methods": ["uds"], "budgets": [0.25]}
    created = client.post("/api/v1/comparisons", headers=bearer(key), json=body)
    assert created.status_code == 201, created.text
    comparison = created.json()
    url = f"/api/v1/comparisons/{comparison['id']}"
    tag, report_tag = first(client, key, url), first(client, key, url + "/report")
    set_job(settings, comparison["runs"][0]["job_id"], status="running", started_at=utcnow())
    response = poll(client, key, url, tag)
    assert response.status_code == 200 and response.json()["status"] == "running"
    assert poll(client, key, url + "/report", report_tag).status_code == 200
    client.post(url + "/cancel", headers=bearer(key))


def test_openai_job_and_events(client, key, running):
    job_id, logger = running
    url = f"/v1/fine_tuning/jobs/{job_id}"
    tag, events_tag = first(client, key, url), first(client, key, url + "/events")
    logger.log_step(step_metrics(3, [3, 4], {3}))
    logger.flush()
    assert poll(client, key, url, tag).status_code == 200
    events = poll(client, key, url + "/events", events_tag)
    assert events.status_code == 200 and events.headers["etag"] != events_tag


def test_an_answer_is_kept_for_its_tag_for_a_second_only():
    from api.conditional import REPRESENTATION_SECONDS, _Representations

    now = [100.0]
    kept = _Representations(clock=lambda: now[0])
    kept.keep('W/"a"', "application/json", b'{"id": 1}')
    assert kept.get('W/"a"') == ("application/json", b'{"id": 1}') and kept.get('W/"b"') is None
    now[0] += REPRESENTATION_SECONDS + 0.01
    assert kept.get('W/"a"') is None  # a running job's eta would otherwise age


def test_kept_answers_are_bounded():
    from api.conditional import _KEPT_REPRESENTATIONS, _Representations

    kept = _Representations(clock=lambda: 0.0)
    for n in range(_KEPT_REPRESENTATIONS + 1):
        kept.keep(f'W/"{n}"', "application/json", b"{}")
    assert kept.get('W/"0"') is None and kept.get(f'W/"{_KEPT_REPRESENTATIONS}"') is not None

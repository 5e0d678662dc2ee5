"""Limits: per-key rate limit on creating jobs and uploads (429 + Retry-After; in memory, or shared in Redis),
per-tenant cap on unfinished jobs (400 `too_many_active_jobs`), and the cap on non-upload request bodies (413)."""

from __future__ import annotations

import json
import secrets
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db import session_factory
from api.limits import MemoryBuckets, RedisBuckets
from api.main import create_app
from api.models import Job
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload


def app_with(settings, **changes):
    return TestClient(create_app(settings.model_copy(update=changes)))


def test_creations_are_rate_limited_per_key_with_retry_after(settings, database_url):
    with app_with(settings, create_rate_per_minute=6, create_burst=3) as client:
        _, key = new_tenant_key(database_url)
        _, other = new_tenant_key(database_url)
        dataset = upload(client, key, jsonl(chat_rows(4))).json()  # 1
        create_job(client, key, dataset["id"])  # 2
        client.post(
            "/v1/files",
            headers=bearer(key),
            files={"file": ("a.jsonl", jsonl(chat_rows(3)))},
            data={"purpose": "fine-tune"},
        ).raise_for_status()  # 3: the bucket is shared by all four routes
        for method, path, kwargs in [
            ("POST", "/api/v1/jobs", {"json": {"dataset_id": dataset["id"], "model": "uds-tiny"}}),
            ("POST", "/api/v1/datasets", {"files": {"file": ("b.jsonl", jsonl(chat_rows(3)))}}),
            (
                "POST",
                "/v1/files",
                {"files": {"file": ("c.jsonl", jsonl(chat_rows(3)))}, "data": {"purpose": "fine-tune"}},
            ),
            ("POST", "/v1/fine_tuning/jobs", {"json": {"training_file": dataset["id"], "model": "uds-tiny"}}),
        ]:
            response = client.request(method, path, headers=bearer(key), **kwargs)
            assert response.status_code == 429, (path, response.text)
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert response.json()["error"]["type"] == "rate_limit_error"
            assert 1 <= int(response.headers["retry-after"]) <= 10  # one token comes back every 10 s
        # Reads are not limited, and another key has its own bucket.
        assert client.get(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 200
        upload(client, other, jsonl(chat_rows(4)))
        # Nothing of the refused requests was stored.
        with session_factory(database_url)() as session:
            assert session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == dataset["id"])) == 1


def test_token_bucket_refills():
    buckets = MemoryBuckets(rate_per_second=100.0, burst=2)
    assert buckets.take("k") == 0 and buckets.take("k") == 0
    wait = buckets.take("k")
    assert 0 < wait <= 0.01
    import time

    time.sleep(0.03)
    assert buckets.take("k") == 0


def test_redis_bucket_is_shared_by_api_processes_and_fails_open():
    from tests.utils.service import require_redis

    url = require_redis()
    who = "test-" + secrets.token_hex(6)
    one, two = RedisBuckets(url, 0.01, 2), RedisBuckets(url, 0.01, 2)  # two API processes, one bucket per key
    assert one.take(who) == 0 and two.take(who) == 0
    assert two.take(who) > 0 and one.take(who) > 0
    # Redis unreachable: requests go through, limited in-process only.
    from tests.utils.service import free_port

    down = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", 0.01, 2)
    assert down.take(who) == 0 and down.take(who) == 0 and down.take(who) > 0


def test_cap_on_unfinished_jobs_per_tenant(settings, database_url):
    with app_with(settings, max_active_jobs=2) as client:
        _, key = new_tenant_key(database_url)
        dataset = upload(client, key, jsonl(chat_rows(4))).json()
        first = create_job(client, key, dataset["id"]).json()
        create_job(client, key, dataset["id"])
        refused = create_job(client, key, dataset["id"], expect=400).json()["error"]
        assert refused["code"] == "too_many_active_jobs" and "UDS_MAX_ACTIVE_JOBS=2" in refused["message"]
        oai = client.post(
            "/v1/fine_tuning/jobs", headers=bearer(key), json={"training_file": dataset["id"], "model": "uds-tiny"}
        )
        assert oai.status_code == 400 and oai.json()["error"]["code"] == "too_many_active_jobs"
        # Another tenant is not affected; a cancel frees a place.
        _, other = new_tenant_key(database_url)
        create_job(client, other, upload(client, other, jsonl(chat_rows(4))).json()["id"])
        client.post(f"/api/v1/jobs/{first['id']}/cancel", headers=bearer(key)).raise_for_status()
        create_job(client, key, dataset["id"])


def test_cap_holds_under_concurrent_creations(settings, database_url):
    with app_with(settings, max_active_jobs=3) as client:
        tenant, key = new_tenant_key(database_url)
        dataset = upload(client, key, jsonl(chat_rows(4))).json()
        barrier = threading.Barrier(8)
        codes = []

        def create():
            barrier.wait()
            codes.append(create_job(client, key, dataset["id"], expect=None).status_code)

        threads = [threading.Thread(target=create) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(codes) == [201] * 3 + [400] * 5, codes


def test_request_bodies_are_capped_except_uploads(settings, database_url):
    with app_with(settings, max_request_bytes=64 * 1024, max_upload_bytes=1024 * 1024) as client:
        _, key = new_tenant_key(database_url)
        big = {"dataset_id": "file-x", "model": "uds-tiny", "metadata": {"k": "v" * (100 * 1024)}}
        response = client.post("/api/v1/jobs", headers=bearer(key), json=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"dataset_id": "file-x", "model": "uds-tiny", "name": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}'

        response = client.post(
            "/v1/fine_tuning/jobs", headers={**bearer(key), "Content-Type": "application/json"}, content=chunks()
        )
        assert response.status_code == 413, response.text
        # An upload larger than the JSON cap (and under its own limit) is fine.
        line = (
            json.dumps({"messages": [{"role": "user", "content": "x" * 500}, {"role": "assistant", "content": "y"}]})
            + "\n"
        ).encode()
        assert upload(client, key, line * 300).status_code == 201  # ~160 KB
        # Small JSON bodies pass through untouched.
        assert create_job(client, key, "file-" + "0" * 24, expect=404).json()["error"]["code"] == "dataset_not_found"


@pytest.mark.parametrize("limit", [0])
def test_rate_limit_can_be_switched_off(settings, database_url, limit):
    with app_with(settings, create_rate_per_minute=limit, create_burst=1) as client:
        _, key = new_tenant_key(database_url)
        for _ in range(3):
            upload(client, key, jsonl(chat_rows(3)))


def concurrently(n: int, call) -> list[int]:
    """Status codes of `n` calls started at once (a barrier), as many clients racing each other."""
    barrier, codes = threading.Barrier(n), []

    def one():
        barrier.wait()
        codes.append(call().status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(codes)


def test_the_generation_cap_holds_under_concurrent_requests(settings, database_url):
    from api.models import JobTask, utcnow

    with app_with(settings, generate_per_tenant=2, create_rate_per_minute=0) as client:
        _, key = new_tenant_key(database_url)
        dataset = upload(client, key, jsonl(chat_rows(4))).json()
        job = create_job(client, key, dataset["id"]).json()["id"]
        with session_factory(database_url).begin() as session:
            session.get(Job, job).status, session.get(Job, job).finished_at = "succeeded", utcnow()
        url = f"/api/v1/jobs/{job}/generate"
        codes = concurrently(12, lambda: client.post(url, headers=bearer(key), json={"prompt": "hi"}))
        assert codes == [202] * 2 + [429] * 10, codes
        with session_factory(database_url).begin() as session:  # nothing left for later tests' sweeps
            for task in session.scalars(select(JobTask).where(JobTask.job_id == job)):
                task.status = "cancelled"


def test_the_webhook_cap_holds_under_concurrent_requests(settings, database_url):
    with app_with(settings, max_webhooks_per_tenant=16, allow_private_targets=True) as client:
        _, key = new_tenant_key(database_url)
        hook = {"url": "http://127.0.0.1:9/hook"}
        codes = concurrently(24, lambda: client.post("/api/v1/webhooks", headers=bearer(key), json=hook))
        assert codes == [201] * 16 + [400] * 8, codes
        assert len(client.get("/api/v1/webhooks?limit=100", headers=bearer(key)).json()["data"]) == 16


def test_a_comparison_costs_the_rate_limit_one_creation_per_job(settings, database_url):
    with app_with(settings, create_rate_per_minute=6, create_burst=30, max_active_jobs=100) as client:
        _, key = new_tenant_key(database_url)
        train, held_out = (upload(client, key, jsonl(chat_rows(4))).json()["id"] for _ in range(2))  # 2 tokens
        body = {"dataset_id": train, "eval_dataset_id": held_out, "methods": ["random"], "budgets": [0.25]}
        first = client.post("/api/v1/comparisons", headers=bearer(key), json={**body, "seeds": 10})  # 20 jobs
        assert first.status_code == 201, first.text
        # 8 left: one is taken when asked (as for any creation), then 19 more are needed for the other jobs.
        second = client.post("/api/v1/comparisons", headers=bearer(key), json={**body, "seeds": 10})
        assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(second.headers["retry-after"]) >= 100  # 12 more tokens at one per 10 s
        assert client.post("/api/v1/comparisons", headers=bearer(key), json={**body, "seeds": 3}).status_code == 201
        with session_factory(database_url)() as session:  # the refused one left nothing
            assert session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == train)) == 26
        for comparison in client.get("/api/v1/comparisons", headers=bearer(key)).json()["data"]:
            client.post(f"/api/v1/comparisons/{comparison['id']}/cancel", headers=bearer(key))


def test_big_requests_wait_for_a_full_bucket_and_may_leave_it_in_debt():
    buckets = MemoryBuckets(rate_per_second=1.0, burst=10)
    assert buckets.take("k", 8) == 0  # 2 left
    assert 7.9 < buckets.take("k", 10) <= 8.0  # needs the full 10
    fresh = MemoryBuckets(rate_per_second=1.0, burst=10)
    assert fresh.take("k", 45) == 0  # bigger than the burst: a full bucket lets it through, 35 in debt
    assert 35.9 < fresh.take("k") <= 36.0

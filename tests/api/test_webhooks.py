"""Webhooks end to end: registered through the API, recorded in the transaction of a job's status change, sent by
the worker side (worker/webhooks.py deliver_due) to a real HTTP receiver on 127.0.0.1, signed the Standard Webhooks
way, retried with backoff until answered 2xx, and logged in GET /webhooks/{id}/deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import update

from api.db import session_factory
from api.events import add_event
from api.models import Job, utcnow
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, new_tenant_key, upload
from worker.webhooks import backoff_seconds, deliver_due


@pytest.fixture
def settings(settings):
    # Tests send to 127.0.0.1; retries after 50 ms so a retry needs no long wait.
    return settings.model_copy(
        update={
            "allow_private_targets": True,
            "webhook_retry_base_seconds": 0.05,
            "webhook_retry_max_seconds": 0.2,
            "webhook_max_attempts": 3,
            "webhook_timeout_seconds": 5,
        }
    )


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that answers the scripted statuses in turn (then 200) and keeps each request."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def tenant(client, database_url):
    """A fresh tenant with a dataset; its webhooks are deleted afterwards, so no later sweep sends to a dead port."""
    _, key = new_tenant_key(database_url)
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]
    yield key, dataset
    for hook in client.get("/api/v1/webhooks", headers=bearer(key)).json()["data"]:
        client.delete(f"/api/v1/webhooks/{hook['id']}", headers=bearer(key))


def finish_job(database_url, job_id, status, **values):
    """The job's final transition as a worker records it: the row and its status event in one transaction."""
    with session_factory(database_url).begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=utcnow(), **values))
        add_event(session, job_id, "status", f"{status}.", data={"status": status})


def deliver_until(settings, done, seconds=10.0):
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5, follow_redirects=False) as http:
        while time.monotonic() < deadline:
            deliver_due(settings, http)
            if done():
                return
            time.sleep(0.02)
    raise AssertionError("deliveries not done in time")


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """The receiver's side of Standard Webhooks, written from the specification (not from worker/webhooks.py)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


def test_create_shows_the_secret_once_then_list_get_delete(client, tenant):
    key, _ = tenant
    created = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": "https://example.com/h"})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and len(base64.b64decode(hook["secret"][6:])) == 24
    assert hook["events"] == ["job.cancelled", "job.failed", "job.succeeded"]
    listed = client.get("/api/v1/webhooks", headers=bearer(key)).json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]] and listed["data"][0]["secret"] is None
    assert client.get(f"/api/v1/webhooks/{hook['id']}", headers=bearer(key)).json()["secret"] is None
    assert client.delete(f"/api/v1/webhooks/{hook['id']}", headers=bearer(key)).json()["deleted"] is True
    gone = client.get(f"/api/v1/webhooks/{hook['id']}", headers=bearer(key))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"


@pytest.mark.parametrize(
    "url, words",
    [
        ("ftp://example.com/h", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "valid URL"),
    ],
)
def test_non_http_urls_are_refused(client, tenant, url, words):
    response = client.post("/api/v1/webhooks", headers=bearer(tenant[0]), json={"url": url})
    assert response.status_code == 400 and response.json()["error"]["param"] == "url", response.text
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/h",
        "http://localhost/h",
        "http://10.1.2.3/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://192.168.0.1/h",
        "http://0.0.0.0/h",
    ],
)
def test_private_targets_are_refused_on_a_shared_deployment(database_url, settings, url):
    from fastapi.testclient import TestClient

    from api.main import create_app

    shared = settings.model_copy(update={"allow_private_targets": None, "host": "0.0.0.0"})
    assert not shared.private_targets_allowed
    _, key = new_tenant_key(database_url)
    with TestClient(create_app(shared)) as api:
        response = api.post("/api/v1/webhooks", headers=bearer(key), json={"url": url})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url", response.text
    assert "UDS_ALLOW_PRIVATE_TARGETS" in response.json()["error"]["message"]


def test_bad_events_and_unknown_fields_are_400(client, tenant):
    for body in (
        {"url": "https://example.com", "events": ["job.exploded"]},
        {"url": "https://example.com", "events": []},
        {"url": "https://example.com", "secret": "mine"},
    ):
        assert client.post("/api/v1/webhooks", headers=bearer(tenant[0]), json=body).status_code == 400


def test_a_cancelled_job_is_delivered_signed_once(client, settings, tenant, receiver):
    key, dataset = tenant
    r = receiver()
    hook = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": r.url}).json()
    job = create_job(client, key, dataset).json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(key)).json()["status"] == "cancelled"

    deliver_until(settings, lambda: len(r.requests) == 1)
    headers, body = r.requests[0]
    assert verify(hook["secret"], headers, body)
    assert not verify(hook["secret"], headers, body + b" ")  # the signature covers the exact body
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    event = json.loads(body)
    assert event["type"] == "job.cancelled" and event["data"]["id"] == job["id"]
    assert event["data"]["status"] == "cancelled"

    log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=bearer(key)).json()["data"]
    assert [(d["id"], d["status"], d["attempts"], d["last_status_code"]) for d in log] == [
        (headers["webhook-id"], "delivered", 1, 200)
    ]
    deliver_due(settings, httpx.Client())
    assert len(r.requests) == 1  # delivered once: nothing left to send


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(client, settings, tenant, receiver):
    key, dataset = tenant
    r = receiver(statuses=[500, 503])
    hook = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": r.url}).json()
    job = create_job(client, key, dataset).json()
    finish_job(settings.sqlalchemy_url, job["id"], "succeeded", fine_tuned_model="ft:uds-tiny:x:y:z")

    deliver_until(settings, lambda: len(r.requests) == 3)
    ids = {h["webhook-id"] for h, _ in r.requests}
    assert len(ids) == 1  # one message, three attempts: receivers deduplicate on webhook-id
    assert all(verify(hook["secret"], h, b) for h, b in r.requests)
    assert json.loads(r.requests[-1][1])["data"]["fine_tuned_model"] == "ft:uds-tiny:x:y:z"
    (delivery,) = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=bearer(key)).json()["data"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["log"]] == [500, 503, 200]
    assert [a["error"] for a in delivery["log"]] == ["HTTP 500", "HTTP 503", None]


def test_a_receiver_that_never_answers_fails_after_the_last_attempt(client, settings, tenant, receiver):
    key, dataset = tenant
    r = receiver()
    url = r.url
    r.close()  # connection refused from now on
    hook = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": url, "events": ["job.failed"]}).json()
    job = create_job(client, key, dataset).json()
    finish_job(settings.sqlalchemy_url, job["id"], "failed", error_code="internal_error", error_message="boom")

    page = f"/api/v1/webhooks/{hook['id']}/deliveries"
    deliver_until(settings, lambda: client.get(page, headers=bearer(key)).json()["data"][0]["status"] == "failed")
    (delivery,) = client.get(page, headers=bearer(key)).json()["data"]
    assert delivery["attempts"] == settings.webhook_max_attempts and delivery["next_attempt_at"] is None
    assert "ConnectError" in delivery["last_error"]
    assert delivery["payload"]["data"]["error"] == {"code": "internal_error", "message": "boom"}


def test_only_subscribed_events_are_recorded(client, settings, tenant, receiver):
    key, dataset = tenant
    r = receiver()
    running = client.post(
        "/api/v1/webhooks", headers=bearer(key), json={"url": r.url, "events": ["job.running"]}
    ).json()
    final = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": r.url}).json()
    job = create_job(client, key, dataset).json()
    with session_factory(settings.sqlalchemy_url).begin() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status="running"))
        add_event(session, job["id"], "status", "Running.", data={"status": "running"})
    finish_job(settings.sqlalchemy_url, job["id"], "succeeded")
    deliveries = {
        h: [d["event"] for d in client.get(f"/api/v1/webhooks/{h}/deliveries", headers=bearer(key)).json()["data"]]
        for h in (running["id"], final["id"])
    }
    assert deliveries == {running["id"]: ["job.running"], final["id"]: ["job.succeeded"]}  # none for queued
    deliver_until(settings, lambda: len(r.requests) == 2)


def test_backoff_doubles_up_to_the_cap(settings):
    s = settings.model_copy(update={"webhook_retry_base_seconds": 10, "webhook_retry_max_seconds": 60})
    assert [backoff_seconds(s, n) for n in range(1, 6)] == [10, 20, 40, 60, 60]


def test_another_tenants_webhook_is_404_and_gets_none_of_its_events(client, settings, tenant, database_url, receiver):
    key, dataset = tenant
    r = receiver()
    hook = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": r.url}).json()
    _, other = new_tenant_key(database_url)
    other_dataset = upload(client, other, jsonl(chat_rows(4))).json()["id"]
    other_job = create_job(client, other, other_dataset).json()
    client.post(f"/api/v1/jobs/{other_job['id']}/cancel", headers=bearer(other))
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries")):
        response = client.request(method, f"/api/v1/webhooks/{hook['id']}{path}", headers=bearer(other))
        assert response.status_code == 404, response.text
    assert client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=bearer(key)).json()["data"] == []

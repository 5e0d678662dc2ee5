"""Sending webhook deliveries (the outbox rows api/webhook_outbox.py writes with each job status change).

At least once: a delivery is claimed by moving its next_attempt_at forward (a conditional UPDATE, so concurrent
senders never send one attempt twice); a sender that dies mid-attempt leaves it due again once that lease runs
out. A 2xx answer delivers it; anything else (an error status, a refused connection, a timeout) schedules the
next attempt after an exponentially growing wait, until UDS_WEBHOOK_MAX_ATTEMPTS. Receivers deduplicate on the
webhook-id header, which is the same on every retry.

Signed as Standard Webhooks (https://www.standardwebhooks.com): webhook-signature is "v1," + base64 of
HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the key bytes of the whsec_ secret.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import threading
import time

import httpx
from sqlalchemy import select, update

from api.db import session_factory
from api.models import Webhook, WebhookDelivery, utcnow
from api.settings import Settings
from api.targets import TargetError, pin

log = logging.getLogger(__name__)

LOG_ENTRIES = 20  # attempts kept in a delivery's log
ERROR_CHARS = 500


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base, ... capped."""
    return min(settings.webhook_retry_base_seconds * 2 ** (attempts - 1), settings.webhook_retry_max_seconds)


@dataclasses.dataclass
class Attempt:
    status_code: int | None
    error: str | None
    ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def send(client: httpx.Client, settings: Settings, url: str, secret: str, msg_id: str, body: str) -> Attempt:
    started = time.monotonic()
    try:
        # Checked again at send time (DNS may point elsewhere by now) and sent to the address just checked.
        target, pinned_headers, extensions = pin(url, settings.private_targets_allowed)
        timestamp = int(time.time())
        response = client.post(
            target,
            content=body.encode(),
            headers={
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, msg_id, timestamp, body),
                "user-agent": "uds-webhooks/1",
                **pinned_headers,
            },
            extensions=extensions,
            follow_redirects=False,
        )
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Attempt(response.status_code, error, _ms(started))
    except TargetError as exc:
        return Attempt(None, f"refused target: {exc}", _ms(started))
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def deliver_due(settings: Settings, client: httpx.Client, limit: int = 50) -> int:
    """Send every delivery that is due now, once each. Returns how many attempts were made."""
    sessions = session_factory(settings.sqlalchemy_url)
    with sessions() as session:
        due = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
    attempts = 0
    for delivery_id, due_at in due:
        claimed = _claim(sessions, settings, delivery_id, due_at)
        if claimed is None:
            continue
        delivery, url, secret = claimed
        result = send(client, settings, url, secret, delivery.id, delivery.payload)
        _record(sessions, settings, delivery, result)
        attempts += 1
    return attempts


def _claim(sessions, settings: Settings, delivery_id: str, due_at: dt.datetime):
    """(delivery, url, secret) if this sender took the attempt, else None. The lease outlasts one attempt."""
    lease = utcnow() + dt.timedelta(seconds=settings.webhook_timeout_seconds * 3 + 30)
    with sessions.begin() as session:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at == due_at,
            )
            .values(next_attempt_at=lease)
        ).rowcount
        if taken != 1:
            return None
        delivery = session.get(WebhookDelivery, delivery_id)
        hook = session.get(Webhook, delivery.webhook_id)
        session.expunge(delivery)
        return delivery, hook.url, hook.secret


def _record(sessions, settings: Settings, delivery: WebhookDelivery, result: Attempt) -> None:
    now = utcnow()
    attempts = delivery.attempts + 1
    entry = {
        "at": now.isoformat().replace("+00:00", "Z"),
        "status_code": result.status_code,
        "error": result.error,
        "ms": result.ms,
    }
    values = {
        "attempts": attempts,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "log": [*(delivery.log or []), entry][-LOG_ENTRIES:],
    }
    if result.ok:
        values.update(status="delivered", delivered_at=now, next_attempt_at=None)
    elif attempts >= settings.webhook_max_attempts:
        values.update(status="failed", next_attempt_at=None)
    else:
        values["next_attempt_at"] = now + dt.timedelta(seconds=backoff_seconds(settings, attempts))
    with sessions.begin() as session:
        # Only while still pending: a deleted webhook took its deliveries with it.
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, WebhookDelivery.status == "pending")
            .values(**values)
        )
    log.info(
        "webhook delivery %s (%s) attempt %d: %s",
        delivery.id,
        delivery.event,
        attempts,
        "delivered" if result.ok else result.error,
    )


class WebhookSender(threading.Thread):
    """Sends due deliveries every UDS_WEBHOOK_POLL_SECONDS (the embedded server and each Celery worker's main
    process run one). Redirects are not followed: a 3xx is a failed attempt, never a hop to another address."""

    def __init__(self, settings: Settings):
        super().__init__(name="uds-webhooks", daemon=True)
        self.settings = settings
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(
            timeout=self.settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False
        ) as client:
            while not self.done.is_set():
                try:
                    deliver_due(self.settings, client)
                except Exception:
                    log.warning("webhook sweep failed; retrying at the next one", exc_info=True)
                self.done.wait(self.settings.webhook_poll_seconds)

    def stop(self, timeout: float = 15) -> None:
        self.done.set()
        self.join(timeout)

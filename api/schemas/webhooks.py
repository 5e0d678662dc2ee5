"""Webhooks (request and response bodies): a tenant's endpoint for job events, and its delivery log."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.models import Webhook, WebhookDelivery

WebhookEvent = Literal["job.succeeded", "job.failed", "job.cancelled", "job.running"]
DEFAULT_EVENTS: list[WebhookEvent] = ["job.succeeded", "job.failed", "job.cancelled"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(max_length=2048, description="http(s) endpoint that receives a POST per event.")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(DEFAULT_EVENTS),
        min_length=1,
        max_length=4,
        description="Default: the three final ones; job.running is opt-in.",
    )
    description: str | None = Field(default=None, max_length=256)


class WebhookPublic(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[str]
    description: str | None
    created_at: dt.datetime
    secret: str | None = Field(default=None, description="whsec_...: only in the answer to the creation.")


def webhook_public(hook: Webhook, with_secret: bool = False) -> WebhookPublic:
    return WebhookPublic(
        id=hook.id,
        url=hook.url,
        events=list(hook.events),
        description=hook.description,
        created_at=hook.created_at,
        secret=hook.secret if with_secret else None,
    )


class WebhookDeleted(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    deleted: bool = True


class DeliveryPublic(BaseModel):
    id: str = Field(description="Sent as the webhook-id header; the same on every retry.")
    object: Literal["webhook.delivery"] = "webhook.delivery"
    webhook_id: str
    event: str
    job_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    log: list[dict[str, Any]] = Field(description="Each attempt: at, status_code, error, ms.")
    payload: Any
    created_at: dt.datetime
    delivered_at: dt.datetime | None


def delivery_public(d: WebhookDelivery) -> DeliveryPublic:
    import json

    return DeliveryPublic(
        id=d.id,
        webhook_id=d.webhook_id,
        event=d.event,
        job_id=d.job_id,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        log=list(d.log or []),
        payload=json.loads(d.payload),
        created_at=d.created_at,
        delivered_at=d.delivered_at,
    )

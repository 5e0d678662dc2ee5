"""Webhooks: a POST to the tenant's URL when a job succeeds, fails or is cancelled (optionally: starts running).

    POST   /api/v1/webhooks                            {"url", "events"?, "description"?}  201, secret shown once
    GET    /api/v1/webhooks                            the tenant's webhooks, newest first
    GET    /api/v1/webhooks/{webhook_id}
    DELETE /api/v1/webhooks/{webhook_id}
    GET    /api/v1/webhooks/{webhook_id}/deliveries    the delivery log: each event, its attempts and outcome

Deliveries are signed the Standard Webhooks way and sent by the workers (worker/webhooks.py), at least once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.pagination import AfterParam, LimitParam
from api.schemas import ListPage
from api.schemas.webhooks import (
    DeliveryPublic,
    WebhookCreate,
    WebhookDeleted,
    WebhookPublic,
    delivery_public,
    webhook_public,
)
from api.services import webhooks

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
WebhookId = Annotated[str, Path(max_length=64)]


@router.post("", status_code=201, response_model=WebhookPublic)
def create_webhook(body: WebhookCreate, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep):
    """The answer carries `secret` (whsec_...), the only time it is shown: keep it to verify signatures."""
    return webhook_public(webhooks.create_webhook(session, tenant, settings, body), with_secret=True)


@router.get("", response_model=ListPage[WebhookPublic])
def list_webhooks(session: SessionDep, tenant: CurrentTenant, limit: LimitParam = 20, after: AfterParam = None):
    hooks, more = webhooks.list_webhooks(session, tenant, after, limit)
    return ListPage[WebhookPublic].page([webhook_public(h) for h in hooks], has_more=more)


@router.get("/{webhook_id}", response_model=WebhookPublic)
def get_webhook(webhook_id: WebhookId, session: SessionDep, tenant: CurrentTenant):
    return webhook_public(webhooks.tenant_webhook(session, tenant, webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookDeleted)
def delete_webhook(webhook_id: WebhookId, session: SessionDep, tenant: CurrentTenant):
    webhooks.delete_webhook(session, webhooks.tenant_webhook(session, tenant, webhook_id))
    return WebhookDeleted(id=webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=ListPage[DeliveryPublic])
def list_deliveries(
    webhook_id: WebhookId, session: SessionDep, tenant: CurrentTenant, limit: LimitParam = 20, after: AfterParam = None
):
    hook = webhooks.tenant_webhook(session, tenant, webhook_id)
    rows, more = webhooks.list_deliveries(session, tenant, hook, after, limit)
    return ListPage[DeliveryPublic].page([delivery_public(d) for d in rows], has_more=more)

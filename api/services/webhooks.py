"""A tenant's webhooks: create (the secret shown once), list, delete, and read the delivery log."""

from __future__ import annotations

import base64
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.limits import count_locked
from api.models import Tenant, Webhook, WebhookDelivery, utcnow
from api.pagination import newest_first
from api.schemas.webhooks import WebhookCreate
from api.settings import Settings
from api.targets import TargetError, check_url


def new_secret() -> str:
    """Standard Webhooks' form: whsec_ + base64 of the key bytes (24 random bytes, 192 bits)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_webhook(session: Session, tenant: Tenant, settings: Settings, body: WebhookCreate) -> Webhook:
    try:
        check_url(body.url, settings.private_targets_allowed)
    except TargetError as exc:
        raise APIError(400, f"url: {exc}.", code="invalid_url", param="url") from None
    hook = Webhook(
        id="wh_" + secrets.token_hex(12),
        tenant_id=tenant.id,
        url=body.url,
        events=sorted(set(body.events)),
        secret=new_secret(),
        description=body.description,
        created_at=utcnow(),
    )
    session.add(hook)
    session.flush()
    count = count_locked(
        session, tenant.id, select(func.count()).select_from(Webhook).where(Webhook.tenant_id == tenant.id)
    )
    if count > settings.max_webhooks_per_tenant:
        session.rollback()
        raise APIError(
            400,
            f"You have {count - 1} webhooks, the most this server keeps per tenant "
            f"(UDS_MAX_WEBHOOKS_PER_TENANT); delete one first.",
            code="too_many_webhooks",
        )
    session.commit()
    return hook


def tenant_webhook(session: Session, tenant: Tenant, webhook_id: str) -> Webhook:
    hook = session.scalar(select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant.id))
    if hook is None:
        raise not_found("webhook", webhook_id, "webhook_id")
    return hook


def list_webhooks(session: Session, tenant: Tenant, after: str | None, limit: int):
    return newest_first(
        session, Webhook, select(Webhook).where(Webhook.tenant_id == tenant.id), after, limit, tenant.id
    )


def delete_webhook(session: Session, hook: Webhook) -> None:
    """Its pending deliveries go with it (cascade): nobody is left to receive them."""
    session.delete(hook)
    session.commit()


def list_deliveries(session: Session, tenant: Tenant, hook: Webhook, after: str | None, limit: int):
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    return newest_first(session, WebhookDelivery, stmt, after, limit, tenant.id)

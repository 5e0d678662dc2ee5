"""API keys: `uds-<43 url-safe chars>`, stored only as sha256 hashes, each bound to one tenant.

sha256 without a salt is enough here: the keys are 256 random bits, not passwords, so there is nothing to
brute-force, and an unsalted hash lets the lookup be one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.models import ApiKey, Tenant

KEY_PREFIX = "uds-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    try:
        with session.begin_nested():
            tenant = Tenant(name=name)
            session.add(tenant)
    except IntegrityError:
        # Another process created it between our SELECT and INSERT.
        tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise RuntimeError(f"tenant {name!r}: the insert conflicted but no such row is visible")
    return tenant


def add_key(session: Session, tenant_name: str, key: str | None = None, name: str | None = None) -> str:
    """Store a key (a new random one unless given) for the tenant; returns the key in clear, the only time it exists."""
    key = key or generate_key()
    if not key.startswith(KEY_PREFIX) or len(key) < 20:
        raise ValueError(f"an API key must start with {KEY_PREFIX!r} and be at least 20 characters")
    tenant = get_or_create_tenant(session, tenant_name)
    digest = hash_key(key)
    existing = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if existing is None:
        session.add(ApiKey(tenant_id=tenant.id, key_hash=digest, prefix=key[: len(KEY_PREFIX) + 6], name=name))
    elif existing.tenant_id != tenant.id:
        raise ValueError("this key is already bound to another tenant")
    return key


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )

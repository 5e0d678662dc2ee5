"""`uds keys create | list | revoke`: API keys straight into the database (no running service needed)."""

from __future__ import annotations

import sys

from api.settings import Settings, get_settings


def keys_create(tenant: str | None, name: str | None = None, settings: Settings | None = None) -> int:
    """Create an API key for `tenant` (created if new) and print it: the only time it is shown.

    Without a tenant, on a server that needs no keys (bound to loopback), the key is the key-less tenant's: the
    `openai` client must send some key, and its jobs then show in the key-less dashboard too.
    """
    from api.auth import add_key
    from api.db import migrate, session_factory

    settings = settings or get_settings()
    if tenant is None:
        if settings.auth_required:
            print(
                "error: give --tenant NAME: this server requires keys, so there is no key-less tenant to default to",
                file=sys.stderr,
            )
            return 2
        tenant = settings.local_tenant
    if not tenant or len(tenant) > 128:
        print("error: --tenant must be 1-128 characters", file=sys.stderr)
        return 2
    migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url)() as session:
        key = add_key(session, tenant, name=name)
        session.commit()
    print(key)
    return 0


def keys_list(settings: Settings | None = None) -> int:
    """Every key by its prefix, tenant, name, creation and revocation: never the key (only its hash is stored)."""
    from sqlalchemy import select

    from api.db import migrate, session_factory
    from api.models import ApiKey, Tenant

    settings = settings or get_settings()
    migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url)() as session:
        rows = session.execute(
            select(ApiKey, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        ).all()
    if not rows:
        print("no keys; create one with `uds keys create`", file=sys.stderr)
        return 0
    print(f"{'KEY':<14} {'TENANT':<20} {'NAME':<16} {'CREATED':<20} STATUS")
    for key, tenant in rows:
        status = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        print(
            f"{key.prefix + '...':<14} {tenant:<20} {key.name or '-':<16} {key.created_at:%Y-%m-%d %H:%M:%S}  {status}"
        )
    return 0


def keys_revoke(key_or_prefix: str, settings: Settings | None = None) -> int:
    """Revoke one key, given whole or by its shown prefix (`uds-` + 6 characters). Takes effect at the next
    request: every request looks its key up in the database, nothing is cached."""
    from sqlalchemy import select, update

    from api.auth import KEY_PREFIX, hash_key
    from api.db import migrate, session_factory
    from api.models import ApiKey, utcnow

    settings = settings or get_settings()
    value = key_or_prefix.strip()
    if not value.startswith(KEY_PREFIX) or len(value) < len(KEY_PREFIX) + 6:
        print(f"error: give the key or its prefix ({KEY_PREFIX} and at least 6 more characters)", file=sys.stderr)
        return 2
    migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url).begin() as session:
        condition = ApiKey.key_hash == hash_key(value)
        if len(value) <= 16:  # the stored prefix column; a whole key is longer
            condition = ApiKey.prefix == value[:16]
        ids = session.scalars(select(ApiKey.id).where(condition, ApiKey.revoked_at.is_(None))).all()
        if not ids:
            print(f"error: no active key matches {value!r}", file=sys.stderr)
            return 1
        if len(ids) > 1:
            print(f"error: {len(ids)} active keys start with {value!r}; give the whole key", file=sys.stderr)
            return 2
        session.execute(update(ApiKey).where(ApiKey.id == ids[0]).values(revoked_at=utcnow()))
    print(f"revoked key {value[: len(KEY_PREFIX) + 6]}...")
    return 0

"""Dependencies shared by the routers: settings, a session per request, the current tenant, lookup-or-404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from api.auth import hash_key, tenant_for_key
from api.errors import APIError, not_found
from api.models import ApiKey, Comparison, Dataset, Job, Tenant
from api.settings import Settings, is_loopback


async def get_settings_dep(request: Request) -> Settings:
    # async: a sync dependency is a threadpool hop, on every request, to read an attribute
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(request: Request) -> AsyncIterator[Session]:
    # An async dependency on purpose: its teardown (closing the session returns the connection to the pool)
    # then runs on the event loop. As a sync generator it would need a threadpool thread, and under load every
    # thread can be blocked waiting for a pooled connection that only such a teardown would free: requests
    # hung for the pool timeout (30 s) with 100 polling clients (benchmarks/load.py).
    with request.app.state.sessionmaker() as session:
        yield session


# scope="function": the session is closed when the route returns, before the response is sent. With the default
# scope it stayed open until the last byte reached the client, so 16 downloads that never read (or any slow
# reader of a large page) held every pooled connection and took the service from all tenants.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def auth_required_for(settings: Settings, request: Request) -> bool:
    if settings.auth_required:
        return True
    if settings.require_auth == "auto":
        # Bound to loopback, yet a request from elsewhere (a proxy, a port forward): it still needs a key.
        client = request.client.host if request.client else ""
        return not is_loopback(client)
    return False


def bearer_token(request: Request) -> str | None:
    """The key of the Authorization header, None without one; 401 for a header that is not `Bearer <key>`."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "Malformed Authorization header; expected 'Authorization: Bearer uds-...'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def incorrect_key(token: str) -> APIError:
    shown = token[:8] + "..." + token[-4:] if len(token) > 16 else "***"
    return APIError(
        401,
        f"Incorrect API key provided: {shown}. Create one with `uds keys create --tenant NAME`.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def key_principal(token: str) -> str:
    # Limits count per key, on the key as parsed: `bearer K`, `BEARER K` and `Bearer  K` are one key.
    return "key:" + hash_key(token)


def get_current_tenant(request: Request, session: SessionDep, settings: SettingsDep) -> Tenant:
    token = bearer_token(request)
    if token is not None:
        tenant = tenant_for_key(session, token)
        if tenant is None:
            raise incorrect_key(token)
        request.state.principal = key_principal(token)
        return tenant
    if auth_required_for(settings, request):
        raise APIError(
            401,
            "Missing API key: send 'Authorization: Bearer uds-...'.",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = session.get(Tenant, request.app.state.local_tenant_id)
    if tenant is None:  # deleted under us; recreate rather than fail every request
        from api.auth import get_or_create_tenant

        session.commit()  # a write, in a transaction of its own (the lookups read outside one)
        tenant = get_or_create_tenant(session, settings.local_tenant)
        session.commit()
        request.app.state.local_tenant_id = tenant.id
    request.state.principal = f"tenant:{tenant.id}"
    return tenant


Owned = TypeVar("Owned", Dataset, Job, Comparison)


def read_outside_a_transaction(session: Session) -> None:
    """For reads that need no transaction (the lookups below, the validators of polled resources, the pages
    behind them): on Postgres they run in autocommit, without the BEGIN and COMMIT round trips a transaction adds.
    Only when the session has not begun yet; after a commit returns the connection, the next queries get a
    transaction as usual. Never before a write."""
    if not session.in_transaction() and session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def request_tenant(request: Request, session: Session, settings: Settings) -> Tenant:
    """The request's tenant, authenticated once per request: the lookups below authenticate in their own thread
    and transaction instead of depending on CurrentTenant, which would be a threadpool hop and a pooled connection
    (with its pre-ping) more on every poll of a job; a route that also asks for CurrentTenant reuses this one."""
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        read_outside_a_transaction(session)
        tenant = get_current_tenant(request, session, settings)
        request.state.tenant = tenant
    return tenant


def authenticated_tenant(request: Request, session: SessionDep, settings: SettingsDep) -> Tenant:
    tenant = request_tenant(request, session, settings)
    # End the read transaction: it returns the connection to the pool before this request waits for a threadpool
    # thread again (for the next dependency or the route). Held across that wait, connections ran out under a
    # burst while every thread waited for one: benchmarks/load.py's 30 s errors (expire_on_commit=False keeps
    # the tenant loaded).
    session.commit()
    return tenant


CurrentTenant = Annotated[Tenant, Depends(authenticated_tenant)]


def owned(request: Request, session: Session, settings: Settings, model: type[Owned], object_id: str) -> Owned | None:
    """The tenant's `model` row `object_id` (None if it has none such), authenticating the request on the way.
    With a key not yet checked in this request, one query does both (the key's tenant, outer-joined to the row): a
    poll of a job is then the pool's ping and that query. Reads in autocommit (read_outside_a_transaction)."""
    token = None if getattr(request.state, "tenant", None) is not None else bearer_token(request)
    read_outside_a_transaction(session)
    if token is None:
        tenant = request_tenant(request, session, settings)
        return session.scalar(select(model).where(model.id == object_id, model.tenant_id == tenant.id))
    found = session.execute(
        select(Tenant, model)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .outerjoin(model, and_(model.id == object_id, model.tenant_id == Tenant.id))
        .where(ApiKey.key_hash == hash_key(token), ApiKey.revoked_at.is_(None))
    ).first()
    if found is None:
        raise incorrect_key(token)
    request.state.principal = key_principal(token)
    request.state.tenant = found[0]
    return found[1]


def get_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, dataset_id: Annotated[str, Path()]
) -> Dataset:
    dataset = owned(request, session, settings, Dataset, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    session.commit()  # as in authenticated_tenant: no connection held while waiting for the route's thread
    return dataset


def get_job(request: Request, session: SessionDep, settings: SettingsDep, job_id: Annotated[str, Path()]) -> Job:
    job = owned(request, session, settings, Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    session.commit()  # as in authenticated_tenant
    return job


def get_comparison(
    request: Request, session: SessionDep, settings: SettingsDep, comparison_id: Annotated[str, Path()]
) -> Comparison:
    comparison = owned(request, session, settings, Comparison, comparison_id)
    if comparison is None:
        raise not_found("comparison", comparison_id)
    session.commit()  # as in authenticated_tenant
    return comparison


DatasetDep = Annotated[Dataset, Depends(get_dataset)]
JobDep = Annotated[Job, Depends(get_job)]
ComparisonDep = Annotated[Comparison, Depends(get_comparison)]

"""Limits that keep one client from exhausting the service:

- a per-key rate limit on creating jobs and uploading datasets: a token bucket (UDS_CREATE_BURST requests at
  once, refilled at UDS_CREATE_RATE_PER_MINUTE), answered with 429 `rate_limit_exceeded` and `Retry-After`.
  In memory in the embedded mode (one process); in Redis in the distributed mode, so every API process and
  uvicorn worker shares one bucket per key. If Redis cannot be reached the request is let through (the job
  creation then fails on the broker anyway), so a broker hiccup does not turn into a wall of 429s;
- a per-tenant cap on unfinished jobs (UDS_MAX_ACTIVE_JOBS): api/services/jobs.py refuses with 400
  `too_many_active_jobs` (a 409 or 5xx would be retried by clients; this needs a job to finish or a cancel);
- a cap on request bodies other than uploads (UDS_MAX_REQUEST_BYTES), checked while the body streams: 413;
  a body that stalls for UDS_CLIENT_IDLE_TIMEOUT_SECONDS: 408.
  Uploads stream to disk under their own limit (UDS_MAX_UPLOAD_BYTES, api/uploads.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentTenant, SettingsDep
from api.errors import APIError, send_error
from api.models import Tenant
from api.settings import Settings
from api.validation import json_body_problem

log = logging.getLogger(__name__)


def count_locked(session: Session, tenant_id: int, count_stmt) -> int:
    """`count_stmt`'s count under a lock on the tenant's row (Postgres) or the write lock (SQLite). Called after the
    caller's own insert is flushed, so concurrent creations of one tenant count in turn and cannot all slip under
    a cap; the caller rolls back when the count is over it.

    FOR NO KEY UPDATE, not FOR UPDATE: the insert's foreign-key check holds a KEY SHARE lock on the same row, which
    FOR UPDATE would wait for in every other transaction (a deadlock); NO KEY UPDATE waits only for another cap
    check."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    return session.execute(count_stmt).scalar_one()


class MemoryBuckets:
    """Token buckets in this process. take(key, cost) returns 0 when allowed, else the seconds until it would be.

    A request that creates `cost` things (a comparison's jobs) needs `cost` tokens, or a full bucket when `cost` is
    above the burst, and takes `cost`: the bucket may go below zero, and the key then waits until it has refilled."""

    def __init__(self, rate_per_second: float, burst: int, max_keys: int = 100_000):
        self.rate, self.burst, self.max_keys = rate_per_second, burst, max_keys
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, key: str, cost: int = 1) -> float:
        now = time.monotonic()
        needed = min(cost, self.burst)
        with self.lock:
            tokens, at = self.buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= needed:
                if len(self.buckets) >= self.max_keys and key not in self.buckets:
                    self.buckets.clear()  # bounded memory; forgetting full buckets only ever lets requests through
                self.buckets[key] = (tokens - cost, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (needed - tokens) / self.rate


# KEYS[1] bucket; ARGV: rate per second, burst, now (seconds), cost. Atomic in Redis: no two API processes race.
_LUA = """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local rate, burst, now, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local needed = math.min(cost, burst)
local wait = 0
if tokens >= needed then tokens = tokens - cost else wait = (needed - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


class RedisBuckets:
    def __init__(self, url: str, rate_per_second: float, burst: int):
        import redis

        self.rate, self.burst = rate_per_second, burst
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self.script = self.client.register_script(_LUA)
        self.fallback = MemoryBuckets(rate_per_second, burst)

    def take(self, key: str, cost: int = 1) -> float:
        try:
            # Redis TIME, not ours: API hosts with skewed clocks still share one refill rate.
            seconds, micros = self.client.time()
            return float(
                self.script(keys=[f"uds:ratelimit:{key}"], args=[self.rate, self.burst, seconds + micros / 1e6, cost])
            )
        except Exception as exc:
            log.warning("rate limiter: Redis unreachable (%s); limiting in this process only", exc)
            return self.fallback.take(key, cost)


def make_buckets(settings: Settings):
    if settings.create_rate_per_minute <= 0:
        return None
    rate = settings.create_rate_per_minute / 60.0
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(settings.broker_url, rate, settings.create_burst)
    return MemoryBuckets(rate, settings.create_burst)


def rate_limit_creations(request: Request, tenant: CurrentTenant, settings: SettingsDep) -> None:
    """Dependency of the routes that create jobs or datasets: one token per request, per API key."""
    charge_creations(request, tenant, settings, 1)


def charge_creations(request: Request, tenant: Tenant, settings: Settings, cost: int) -> None:
    """`cost` tokens of the key's bucket (a comparison: one per job it creates), or 429 with Retry-After."""
    buckets = getattr(request.app.state, "create_buckets", None)
    if buckets is None:
        return
    # The authenticated key (set by get_current_tenant), never the raw header: spelling the scheme or the spaces
    # differently must not buy a fresh bucket.
    who = getattr(request.state, "principal", None) or f"tenant:{tenant.id}"
    wait = buckets.take(who, cost)
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise APIError(
            429,
            f"Too many jobs or uploads created with this key: at most {settings.create_burst} at once "
            f"and {settings.create_rate_per_minute:g} per minute (UDS_CREATE_RATE_PER_MINUTE). "
            f"Retry in {retry_after} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry_after)},
        )


RateLimited = Depends(rate_limit_creations)
RateLimitedDep = Annotated[None, RateLimited]


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`, counted as it streams (Content-Length is not trusted alone), and
    408 for a body that stalls for `idle_timeout` seconds. Paths in `exempt` (the upload endpoints) enforce their
    own, larger limit and the slow-client rules while streaming to disk (api/uploads.py, api/transfers.py)."""

    def __init__(self, app, max_bytes: int, idle_timeout: float, exempt: set[tuple[str, str]]):
        self.app, self.max_bytes, self.idle_timeout, self.exempt = app, max_bytes, idle_timeout, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) in self.exempt:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        # Read the body up to the limit before the app sees it (it is small: JSON requests), then replay it.
        # No route or session exists yet, so a slow sender holds nothing but this coroutine, and not for long.
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout)
            except asyncio.TimeoutError:
                return await send_error(
                    send,
                    408,
                    f"The request body stalled for {self.idle_timeout:g} s (UDS_CLIENT_IDLE_TIMEOUT_SECONDS).",
                    "client_too_slow",
                    close=True,
                )
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False
        problem = json_body_problem(body) if body else None
        if problem is not None:
            return await send_error(send, problem.status_code, problem.message, problem.code or "", param=problem.param)

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as Starlette expects

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        await send_error(
            send,
            413,
            f"The request body is larger than {self.max_bytes} bytes (UDS_MAX_REQUEST_BYTES).",
            "request_too_large",
            close=True,
        )


__all__ = [
    "BodyLimitMiddleware",
    "MemoryBuckets",
    "RateLimited",
    "RedisBuckets",
    "charge_creations",
    "count_locked",
    "make_buckets",
    "rate_limit_creations",
]

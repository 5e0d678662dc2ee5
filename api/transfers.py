"""Uploads and downloads: how many may run at once, and how slow a client may be.

A transfer holds no database connection: uploads authenticate, give the connection back, stream the body to a
temp file and commit the row in a short transaction at the end (api/services/datasets.py); downloads look the
row up and close the session before the first byte is sent (`SessionDep` is function-scoped, api/deps.py).
What a transfer does hold is an event-loop task, a file descriptor and socket buffers, so:

- at most UDS_MAX_UPLOADS_PER_KEY / UDS_MAX_DOWNLOADS_PER_KEY in flight per API key (the tenant for key-less
  loopback requests) and UDS_MAX_UPLOADS / UDS_MAX_DOWNLOADS per API process; one more is a 429
  `too_many_transfers` with Retry-After, so one tenant's clients cannot take every slot;
- a client that sends or reads nothing for UDS_CLIENT_IDLE_TIMEOUT_SECONDS, or that averages under
  UDS_MIN_TRANSFER_BYTES_PER_SECOND once that long has passed (a byte every 2 s never idles out), is cut off:
  408 `client_too_slow` for uploads, the connection closed for downloads.

The counts are per process (they bound this process's resources); with N uvicorn workers a key may hold N times
the per-key cap at worst.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import FileResponse

from api.errors import APIError
from api.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["upload", "download"]


class SlowClient(Exception):
    """The client stopped sending or reading, or is slower than the deployment's minimum rate."""


class Slot:
    """One transfer in flight; release() is idempotent, so every exit path may call it."""

    def __init__(self, limits: "TransferLimits", kind: Kind, who: str):
        self.limits, self.kind, self.who = limits, kind, who
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limits._release(self.kind, self.who)


class TransferLimits:
    def __init__(self, settings: Settings):
        self.per_key = {"upload": settings.max_uploads_per_key, "download": settings.max_downloads_per_key}
        self.total = {"upload": settings.max_uploads, "download": settings.max_downloads}
        self.active: Counter[tuple[str, str]] = Counter()
        self.active_total: Counter[str] = Counter()
        self.lock = threading.Lock()

    def acquire(self, kind: Kind, who: str) -> Slot:
        with self.lock:
            if self.active[(kind, who)] >= self.per_key[kind]:
                raise _busy(
                    kind,
                    f"this API key already has {self.per_key[kind]} {kind}s in flight, the most "
                    f"allowed (UDS_MAX_{kind.upper()}S_PER_KEY)",
                )
            if self.active_total[kind] >= self.total[kind]:
                raise _busy(
                    kind,
                    f"the server has {self.total[kind]} {kind}s in flight, the most it takes at once "
                    f"(UDS_MAX_{kind.upper()}S)",
                )
            self.active[(kind, who)] += 1
            self.active_total[kind] += 1
        return Slot(self, kind, who)

    def _release(self, kind: Kind, who: str) -> None:
        with self.lock:
            self.active[(kind, who)] -= 1
            if self.active[(kind, who)] <= 0:
                del self.active[(kind, who)]  # bounded memory: only keys with transfers in flight are kept
            self.active_total[kind] -= 1

    def in_flight(self, kind: Kind) -> int:
        with self.lock:
            return self.active_total[kind]


def _busy(kind: str, why: str) -> APIError:
    return APIError(
        429,
        f"Too many {kind}s at once: {why}. Retry when one has finished.",
        code="too_many_transfers",
        headers={"Retry-After": "5"},
    )


class Pace:
    """Enforces the idle timeout and the minimum average rate on one transfer."""

    def __init__(self, settings: Settings):
        self.idle = settings.client_idle_timeout_seconds
        self.min_rate = settings.min_transfer_bytes_per_second
        self.started = time.monotonic()
        self.bytes = 0

    async def step(self, operation: Awaitable, nbytes: Callable[[Any], int] = lambda _: 0):
        """Await one receive or send, at most `idle` seconds; then check the average rate so far."""
        try:
            result = await asyncio.wait_for(operation, self.idle)
        except asyncio.TimeoutError:
            raise SlowClient(f"nothing transferred for {self.idle:g} s (UDS_CLIENT_IDLE_TIMEOUT_SECONDS)") from None
        self.bytes += nbytes(result)
        elapsed = time.monotonic() - self.started
        # Only after a grace period: the first bytes of a healthy transfer may wait for TCP slow start.
        if self.min_rate and elapsed > self.idle and self.bytes < self.min_rate * elapsed:
            raise SlowClient(
                f"{self.bytes / elapsed:.0f} bytes/s on average, under the minimum of {self.min_rate} "
                "(UDS_MIN_TRANSFER_BYTES_PER_SECOND)"
            )
        return result


def too_slow(exc: SlowClient, param: str | None = None) -> APIError:
    return APIError(
        408,
        f"The client is too slow: {exc}. The request was cut off.",
        code="client_too_slow",
        param=param,
        headers={"Connection": "close"},
    )


async def paced_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, under the slow-client rules (raises SlowClient)."""
    pace = Pace(settings)
    stream = request.stream()
    while True:
        try:
            chunk = await pace.step(stream.__anext__(), len)
        except StopAsyncIteration:
            return
        yield chunk


def who(request: Request) -> str:
    """The key (or key-less tenant) transfers are counted against; set by get_current_tenant."""
    return getattr(request.state, "principal", None) or "anonymous"


def acquire(request: Request, kind: Kind) -> Slot:
    return request.app.state.transfers.acquire(kind, who(request))


class PacedFileResponse(FileResponse):
    """A FileResponse that holds a download slot while it streams and drops a client that stops reading."""

    def __init__(self, *args, slot: Slot, settings: Settings, **kwargs):
        super().__init__(*args, **kwargs)
        self.slot, self.settings = slot, settings

    async def __call__(self, scope, receive, send) -> None:
        pace = Pace(self.settings)

        async def paced_send(message) -> None:
            size = len(message.get("body", b"")) if message.get("type") == "http.response.body" else 0
            await pace.step(send(message), lambda _: size)

        try:
            await super().__call__(scope, receive, paced_send)
        except SlowClient as exc:
            # Returning with the response unfinished makes the server close the connection: the client is gone
            # from our side, and its slot is free for someone else.
            log.warning("download of %s cut off: %s", self.path, exc)
        finally:
            self.slot.release()


def file_response(request: Request, settings: Settings, path, **kwargs) -> PacedFileResponse:
    """A streamed download under the per-key and per-process caps (429 when over them)."""
    slot = acquire(request, "download")
    return PacedFileResponse(path, slot=slot, settings=settings, **kwargs)

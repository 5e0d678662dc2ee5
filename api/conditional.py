"""Conditional GETs for the resources clients poll: a weak ETag and `If-None-Match` -> 304 Not Modified.

The ETag is a digest of a *validator*: a few values that change whenever the representation does (the job row's
columns, an event count), read before anything is serialised and, where possible, before the heavy queries. A poll
of an unchanged resource then costs the authentication and that small read, and answers 304 with no body.

The tags are weak (`W/"..."`, RFC 9110 8.8.1): a representation can also depend on the time it is made (a running
job's `eta_seconds` counts down between two progress writes), so two answers under one tag are equivalent, not
byte-identical. Every tag covers the tenant and the request's parameters, and is computed only after the route's
authentication and lookup: a 304 is never possible where a 200 is not, and a tag says nothing of another tenant.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Request, Response
from sqlalchemy import inspect
from sqlalchemy.orm import Mapper

# Clients must revalidate every time (no-cache), and shared caches must not keep one tenant's answer (private,
# Vary: Authorization). These go on the 200 as on the 304.
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}

# For OpenAPI: the routes that answer 304.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` tag is still current (no body)."}
}

# One entity-tag of an If-None-Match list: an optional W/, then a quoted string of etagc (RFC 9110 8.8.3).
_ENTITY_TAG = re.compile(r'\s*(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')

# Bookkeeping columns no representation shows: the heartbeat moves every few seconds and would change every tag.
_NOT_SHOWN = frozenset({"heartbeat_at", "worker_id", "dispatched_at"})


@cache
def _release() -> str:
    try:
        return version("uds-finetune")
    except PackageNotFoundError:
        return "0.0.0"


def weak_etag(*validator: Any) -> str:
    """The weak tag of `validator` (any values with a stable repr). The release is part of it: a new version may
    show the same rows differently."""
    digest = hashlib.blake2b(repr((_release(), validator)).encode(), digest_size=16).hexdigest()
    return f'W/"{digest}"'


def opaque_tags(header: str) -> list[str] | None:
    """The opaque tags of an If-None-Match value (weak or strong alike), ["*"] for `*`, None if it is malformed."""
    header = header.strip()
    if header == "*":
        return ["*"]
    tags, position = [], 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            return None
        tags.append(match.group(1))
        position = match.end()
    return tags


def none_match(request: Request, etag: str) -> bool:
    """Whether the request's If-None-Match matches `etag` under weak comparison (RFC 9110 13.1.2), as a GET
    uses it. A malformed header matches nothing: the client gets the full answer."""
    values = request.headers.getlist("if-none-match")
    if not values:
        return False
    tags = opaque_tags(",".join(values))
    if not tags:
        return False
    return "*" in tags or etag.removeprefix("W/").strip('"') in tags


def conditional(request: Request, response: Response, *validator: Any) -> Response | None:
    """The 304 to send when the client's tag is current; else the 200 another poll made under the same tag within
    the last `REPRESENTATION_SECONDS`; otherwise None, with the tag put on `response` (the route's 200, which
    `RepresentationCache` then keeps). The path and query (page, filters) are part of the tag; `validator` adds
    what the answer is made of, including the tenant. Call after the route's authentication and lookup, before it
    builds its answer."""
    etag = weak_etag(request.url.path, request.url.query, *validator)
    headers = {"ETag": etag, **CACHE_HEADERS}
    if none_match(request, etag):
        return Response(status_code=304, headers=headers)
    kept = representations.get(etag)
    if kept is not None:
        return Response(content=kept[1], status_code=200, headers=headers, media_type=kept[0])
    request.state.representation_tag = etag
    response.headers.update(headers)
    return None


# When a polled job moves, every dashboard watching it asks for the new answer within one polling interval: the
# first one's answer serves the others for this long. A weak tag allows it (an equivalent answer); a running
# job's eta_seconds is then at most this much older than the request.
REPRESENTATION_SECONDS = 1.0
_KEPT_REPRESENTATIONS = 256


class _Representations:
    """The newest 200 answers of polled resources by tag, each kept `REPRESENTATION_SECONDS` (this process only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._kept: OrderedDict[str, tuple[float, str, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, tag: str) -> tuple[str, bytes] | None:
        with self._lock:
            kept = self._kept.get(tag)
            if kept is None or self._clock() - kept[0] > REPRESENTATION_SECONDS:
                return None
            return kept[1], kept[2]

    def keep(self, tag: str, media_type: str, body: bytes) -> None:
        with self._lock:
            self._kept[tag] = (self._clock(), media_type, body)
            self._kept.move_to_end(tag)
            while len(self._kept) > _KEPT_REPRESENTATIONS:
                self._kept.popitem(last=False)


representations = _Representations()


class RepresentationCache:
    """ASGI middleware: keeps the body of a 200 whose route asked for it through `conditional` (the tag it set on
    the request), so the next polls under the same tag are answered from it. Nothing else is touched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        captured: dict[str, Any] = {}

        async def capture(message):
            if message["type"] == "http.response.start":
                tag = scope.get("state", {}).get("representation_tag")
                if message["status"] == 200 and tag is not None:
                    media = dict(message.get("headers", [])).get(b"content-type", b"").decode("latin-1")
                    captured.update(tag=tag, media=media, chunks=[])
            elif message["type"] == "http.response.body" and captured:
                captured["chunks"].append(message.get("body", b""))
                if not message.get("more_body", False):
                    representations.keep(captured["tag"], captured["media"], b"".join(captured["chunks"]))
            await send(message)

        await self.app(scope, receive, capture)


_shown_columns: dict[type, tuple[str, ...]] = {}


def row_state(row: Any) -> tuple[Any, ...]:
    """Every column of an ORM row that a representation may show: its tag moves whenever any of them does."""
    model = type(row)
    keys = _shown_columns.get(model)
    if keys is None:
        mapper: Mapper[Any] = inspect(model)
        keys = _shown_columns[model] = tuple(p.key for p in mapper.column_attrs if p.key not in _NOT_SHOWN)
    return tuple(getattr(row, key) for key in keys)

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
    """The 304 to send when the client's tag is current; otherwise None, with the tag put on `response` (the
    route's 200). The path and query (page, filters) are part of the tag; `validator` adds what the answer is made
    of, including the tenant. Call after the route's authentication and lookup, before it builds its answer."""
    etag = weak_etag(request.url.path, request.url.query, *validator)
    headers = {"ETag": etag, **CACHE_HEADERS}
    if none_match(request, etag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return None


_shown_columns: dict[type, tuple[str, ...]] = {}


def row_state(row: Any) -> tuple[Any, ...]:
    """Every column of an ORM row that a representation may show: its tag moves whenever any of them does."""
    model = type(row)
    keys = _shown_columns.get(model)
    if keys is None:
        mapper: Mapper[Any] = inspect(model)
        keys = _shown_columns[model] = tuple(p.key for p in mapper.column_attrs if p.key not in _NOT_SHOWN)
    return tuple(getattr(row, key) for key in keys)

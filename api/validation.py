"""Values the database cannot store, refused at the edge as 400s naming the field (they were 500s, or worse).

- Text: NUL characters (Postgres text refuses them) and lone surrogates such as "\\ud800" (not encodable as UTF-8).
- Numbers: NaN and infinities (Postgres JSONB refuses them; on SQLite they were stored and broke every later read
  of the tenant's metadata-filtered lists), and integers outside the 32-bit columns they go into (`seed`).
- URLs: a NUL in the path or the query string, and paths longer than any route needs.

Every JSON request body is walked once, at the edge (`json_body_problem`, called by the body-size middleware that
has read it anyway), so no route can forget a field: a webhook's description, a try-it prompt and whatever a later
route adds are refused alike, on SQLite (which would store them) as on Postgres (which fails with a 500).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote_to_bytes

from api.errors import APIError, param_error, send_error

INT32_MAX = 2**31 - 1
MAX_PATH_CHARS = 2048


def text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def check_values(value: Any, param: str) -> None:
    """Walk a JSON-like value; 400 `invalid_value` naming the first unstorable string or number."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise param_error(param, f"{problem}.")
    elif isinstance(value, float) and not math.isfinite(value):
        raise param_error(param, f"must be a finite number, got {value!r}.")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_values(key, param)
            check_values(item, f"{param}.{key}" if isinstance(key, str) and not text_problem(key) else param)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_values(item, f"{param}.{index}")


def json_body_problem(body: bytes) -> APIError | None:
    """The 400 for the first unstorable text or number in a JSON request body, naming its field ("messages.0.content");
    None for a clean body, and for one that is not JSON (the route's parser says where its syntax breaks)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    try:
        if isinstance(value, dict):
            for key, item in value.items():
                check_values(key, "body")
                check_values(item, key)
        else:
            check_values(value, "body")
    except APIError as exc:
        return exc
    return None


def check_int32(value: int | None, param: str) -> None:
    if value is not None and not 0 <= value <= INT32_MAX:
        raise param_error(param, f"must be an integer in [0, {INT32_MAX}], got {value}.")


def url_problem(scope) -> tuple[int, str, str] | None:
    """(status, message, code) for a URL no route could serve safely, else None."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    if len(raw_path) > MAX_PATH_CHARS:
        return 414, f"The URL path is longer than {MAX_PATH_CHARS} characters.", "uri_too_long"
    if b"\x00" in unquote_to_bytes(raw_path) or "\x00" in scope.get("path", ""):
        return 400, "The URL path contains a NUL character.", "invalid_value"
    query = scope.get("query_string", b"")
    if b"\x00" in unquote_to_bytes(query.replace(b"+", b" ")):
        return 400, "The query string contains a NUL character.", "invalid_value"
    return None


class URLValidationMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        refused = url_problem(scope) if scope["type"] == "http" else None
        if refused is None:
            return await self.app(scope, receive, send)
        await send_error(send, *refused)

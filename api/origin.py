"""Key-less loopback mode against the browser: DNS rebinding and cross-site requests.

When keys are optional (the embedded default, bound to loopback), any web page the operator visits can make their
browser send requests to 127.0.0.1. Two rules close that, for requests that carry no key:

- the Host header must name the loopback (localhost, 127.0.0.1, [::1], *.localhost): a rebound name
  (evil.example resolving to 127.0.0.1) reaches the socket but is refused, so it can read nothing (400
  `invalid_host`);
- a state-changing request (anything but GET/HEAD/OPTIONS) from a browser must come from this server's own origin
  (the Host it was sent to, port included: a page on another loopback port is another origin, maybe another
  user's program): a cross-site form or `fetch` with `Content-Type: text/plain` (no CORS preflight) is refused with
  403 `cross_origin_request`. Browsers always send `Origin` on such requests, and `Sec-Fetch-Site` where they can.

A request with an `Authorization` header is left alone: a browser never attaches one cross-site on its own, and a
key is checked anyway. Tools (curl, the SDKs) send no Origin and a loopback Host, so they are unaffected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from api.errors import send_error
from api.settings import is_loopback

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def loopback_name(host: str) -> bool:
    host = host.strip().lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


def host_of(header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'; '' when it does not parse."""
    try:
        return urlsplit("//" + header).hostname or ""
    except ValueError:
        return ""


DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host_header: str, scheme: str = "http") -> bool:
    """Origin "http://127.0.0.1:8000" against a request to Host "127.0.0.1:8000" over `scheme`: same scheme, host
    name and port (a default port spelled or not)."""
    try:
        parts = urlsplit(origin)
        served = urlsplit(f"{scheme}://{host_header}")
        if parts.scheme != scheme or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            return False
        default = DEFAULT_PORTS[parts.scheme]
        return (parts.hostname, parts.port or default) == (served.hostname, served.port or default)
    except ValueError:
        return False


def refusal(headers: dict[bytes, bytes], method: str, scheme: str = "http") -> tuple[int, str, str] | None:
    """(status, message, code) when the request must be refused, else None."""
    if b"authorization" in headers:
        return None
    host = headers.get(b"host", b"").decode("latin-1")
    if not loopback_name(host_of(host)):
        return (
            400,
            (
                f"Host {host[:100]!r} is not a loopback name. Without API keys this server answers only to "
                "localhost / 127.0.0.1 / [::1]."
            ),
            "invalid_host",
        )
    if method in SAFE_METHODS:
        return None
    origin = headers.get(b"origin", b"").decode("latin-1")
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    cross = site == "cross-site" or (origin and not same_origin(origin, host, scheme))
    if cross:
        return (
            403,
            (
                f"Cross-origin {method} from {origin[:100] or 'another site'} refused: without API keys only "
                "pages served by this server may change state."
            ),
            "cross_origin_request",
        )
    return None


class LoopbackGuardMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        refused = refusal(headers, scope["method"], scope.get("scheme", "http"))
        if refused is None:
            return await self.app(scope, receive, send)
        await send_error(send, *refused)

"""The web dashboard: `/` serves the single page, `/static/...` its files. No auth here, on purpose.

The page holds no data; everything it shows comes from the public REST API under /api/v1 with the user's key,
so serving the shell without a key leaks nothing and lets the page ask for the key itself.

Caching: the shell and our own files are revalidated on every load (ETag, `no-cache`), so a new release is picked
up at once without versioned file names; vendored libraries live under a versioned folder and are immutable.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"

# (path, mtime_ns, size) -> (body, etag). Files are small and few; the key changes when a file does.
_cache: dict[tuple[str, int, int], tuple[bytes, str]] = {}


def _load(path: Path) -> tuple[bytes, str]:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(key)
    if hit is None:
        body = path.read_bytes()
        hit = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        _cache[key] = hit
    return hit


def _file_response(request: Request, path: Path, cache_control: str) -> Response:
    body, etag = _load(path)
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
    }
    media_type = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    if path.suffix.lower() == ".html":
        # The page talks only to its own origin; nothing is loaded from elsewhere (no CDN by design).
        headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )
        headers["Referrer-Policy"] = "no-referrer"
    return Response(content=body, media_type=media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
def index(request: Request) -> Response:
    return _file_response(request, STATIC_DIR / "index.html", _REVALIDATE)


@router.api_route("/static/{file_path:path}", methods=["GET", "HEAD"])
def static_file(file_path: str, request: Request) -> Response:
    path = (STATIC_DIR / file_path).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise HTTPException(status_code=404, detail="Not found")
    cache_control = _IMMUTABLE if path.is_relative_to(STATIC_DIR / "vendor") else _REVALIDATE
    return _file_response(request, path, cache_control)

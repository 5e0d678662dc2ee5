"""Streaming multipart upload: the file part goes to a temp file chunk by chunk, hashed as it arrives, and the
size limit is enforced while streaming (a 10 GB upload is refused at limit + one chunk, not after it is on disk).

Starlette's `UploadFile` spools the whole body before the route runs, which is exactly what we must not do,
so the body is parsed here with python-multipart's push parser.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import APIError
from api.settings import Settings
from api.transfers import SlowClient, paced_chunks, too_slow

FRAMING_BYTES = 64 * 1024  # multipart boundaries and part headers, on top of the file's own limit


@dataclass
class ReceivedFile:
    path: Path  # temp file; the caller renames or deletes it
    filename: str
    bytes: int
    sha256: str
    fields: dict[str, str]


class _TooLarge(Exception):
    pass


def too_large(limit: int) -> APIError:
    return APIError(413, f"The file is larger than the limit of {limit} bytes (UDS_MAX_UPLOAD_BYTES).",
                    code="file_too_large", param="file")


def lock_part(fd: int) -> None:
    """Hold an advisory lock on a temp file while it is written: the start-up sweep (api/main.py) deletes only
    unlocked ones, so it never removes another live process's upload from a shared volume, yet never waits a
    day to remove one a crash left behind (the kernel drops the lock with the process)."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def clean_filename(raw: bytes) -> str:
    """The base name only, as text a database column takes: no NUL or other control characters (Postgres
    refuses NUL in text), invalid UTF-8 replaced, at most 512 characters."""
    name = os.path.basename(raw.decode("utf-8", "replace").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable())[:512].strip()
    return name or "upload.jsonl"


async def receive_file(request: Request, settings: Settings, field_name: str = "file") -> ReceivedFile:
    """Stream the multipart body: the `field_name` part to a temp file, the other parts as small form fields.

    Every byte of the body counts against UDS_MAX_UPLOAD_BYTES (plus FRAMING_BYTES), fields included; at most
    UDS_MAX_FORM_FIELDS fields of UDS_MAX_FORM_FIELD_BYTES each. Parts may come in any order.
    """
    tmp_dir, max_bytes = settings.tmp_dir, settings.max_upload_bytes
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise APIError(400, "Send the dataset as multipart/form-data with a 'file' part.", code="invalid_content_type",
                       param="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FRAMING_BYTES:
        raise too_large(max_bytes)  # refuse before reading a byte; 64 KiB covers the multipart framing

    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
    lock_part(fd)
    out = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    # `filename` is the file part's name, kept once set: a field after the file must not reset it.
    state: dict[str, Any] = {"size": 0, "name": None, "filename": None, "header_field": b"", "header_value": b"", "headers": {},
             "value": bytearray(), "seen_file": False, "n_fields": 0,
             "fields_size": 0}
    fields: dict[str, str] = {}

    def on_part_begin():
        state["headers"] = {}
        state["name"] = None
        state["value"] = bytearray()

    def on_header_field(data, start, end):
        state["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        state["header_value"] += data[start:end]

    def on_header_end():
        state["headers"][state["header_field"].lower()] = state["header_value"]
        state["header_field"] = b""
        state["header_value"] = b""

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name != field_name:
            state["n_fields"] += 1
        if state["n_fields"] > settings.max_form_fields:
            raise APIError(400, f"Too many form fields: at most {settings.max_form_fields} besides {field_name!r} "
                           "(UDS_MAX_FORM_FIELDS).", code="too_many_form_fields", param=name[:64] or None)
        if name == field_name:
            if state["seen_file"]:
                raise APIError(400, "Send exactly one 'file' part.", code="invalid_value", param="file")
            state["seen_file"] = True
            raw = disposition.get(b"filename", b"") or b"upload.jsonl"
            state["filename"] = clean_filename(raw)

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if state["name"] == field_name:
            state["size"] += len(chunk)
            if state["size"] + state["fields_size"] > max_bytes:
                raise _TooLarge()
            digest.update(chunk)
            out.write(chunk)
        else:
            state["fields_size"] += len(chunk)
            if state["size"] + state["fields_size"] > max_bytes:
                raise _TooLarge()  # fields count against the limit too: 300 MB of them costs what a file does
            state["value"] += chunk
            if len(state["value"]) > settings.max_form_field_bytes:
                raise APIError(400, f"Form field {state['name'][:64]!r} is longer than {settings.max_form_field_bytes} "
                               "bytes (UDS_MAX_FORM_FIELD_BYTES).", code="invalid_value", param=state["name"][:64])

    def on_part_end():
        if state["name"] and state["name"] != field_name:
            fields[state["name"]] = state["value"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    received = 0
    try:
        try:
            async for chunk in paced_chunks(request, settings):
                # The raw body too (part headers, preamble), not just the parts' contents.
                received += len(chunk)
                if received > max_bytes + FRAMING_BYTES:
                    raise _TooLarge()
                parser.write(chunk)
            parser.finalize()
        finally:
            out.close()
        if not state["seen_file"]:
            raise APIError(400, "Missing the 'file' part (multipart/form-data).", code="missing_required_parameter",
                           param="file")
    except _TooLarge:
        os.unlink(tmp_name)
        raise too_large(max_bytes) from None
    except SlowClient as exc:
        os.unlink(tmp_name)
        raise too_slow(exc, field_name) from None
    except APIError:
        os.unlink(tmp_name)
        raise
    except Exception as exc:  # malformed multipart, client disconnect
        os.unlink(tmp_name)
        raise APIError(400, f"Could not read the multipart body: {exc}", code="invalid_multipart", param="file") from None
    return ReceivedFile(Path(tmp_name), state["filename"], state["size"], digest.hexdigest(), fields)

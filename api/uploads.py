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
    return APIError(
        413,
        f"The file is larger than the limit of {limit} bytes (UDS_MAX_UPLOAD_BYTES).",
        code="file_too_large",
        param="file",
    )


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


class _MultipartReceiver:
    """python-multipart's callbacks for one upload: the `field_name` part streamed to `out` and hashed, every other
    part kept as a small form field. Each callback enforces the limits on what it has just seen."""

    def __init__(self, out, field_name: str, settings: Settings):
        self.out = out
        self.field_name = field_name
        self.settings = settings
        self.digest = hashlib.sha256()
        self.fields: dict[str, str] = {}
        self.file_bytes = 0
        self.field_bytes = 0
        self.n_fields = 0
        self.seen_file = False
        self.filename: str | None = None  # the file part's name, kept once set: a field after it must not reset it
        self.part_name: str | None = None
        self.part_headers: dict[bytes, bytes] = {}
        self.part_value = bytearray()
        self.header_field = b""
        self.header_value = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.part_headers, self.part_name, self.part_value = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part_headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self.part_headers.get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        self.part_name = name
        if name != self.field_name:
            self.n_fields += 1
        if self.n_fields > self.settings.max_form_fields:
            raise APIError(
                400,
                f"Too many form fields: at most {self.settings.max_form_fields} besides "
                f"{self.field_name!r} (UDS_MAX_FORM_FIELDS).",
                code="too_many_form_fields",
                param=name[:64] or None,
            )
        if name == self.field_name:
            if self.seen_file:
                raise APIError(400, "Send exactly one 'file' part.", code="invalid_value", param="file")
            self.seen_file = True
            self.filename = clean_filename(disposition.get(b"filename", b"") or b"upload.jsonl")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part_name == self.field_name:
            self.file_bytes += len(chunk)
            self._check_total()
            self.digest.update(chunk)
            self.out.write(chunk)
            return
        self.field_bytes += len(chunk)
        self._check_total()  # fields count against the limit too: 300 MB of them costs what a file does
        self.part_value += chunk
        if len(self.part_value) > self.settings.max_form_field_bytes:
            name = (self.part_name or "")[:64]
            raise APIError(
                400,
                f"Form field {name!r} is longer than {self.settings.max_form_field_bytes} bytes "
                "(UDS_MAX_FORM_FIELD_BYTES).",
                code="invalid_value",
                param=name,
            )

    def on_part_end(self) -> None:
        if self.part_name and self.part_name != self.field_name:
            self.fields[self.part_name] = self.part_value.decode("utf-8", "replace")

    def _check_total(self) -> None:
        if self.file_bytes + self.field_bytes > self.settings.max_upload_bytes:
            raise _TooLarge()


async def receive_file(request: Request, settings: Settings, field_name: str = "file") -> ReceivedFile:
    """Stream the multipart body: the `field_name` part to a temp file, the other parts as small form fields.

    Every byte of the body counts against UDS_MAX_UPLOAD_BYTES (plus FRAMING_BYTES), fields included; at most
    UDS_MAX_FORM_FIELDS fields of UDS_MAX_FORM_FIELD_BYTES each. Parts may come in any order.
    """
    tmp_dir, max_bytes = settings.tmp_dir, settings.max_upload_bytes
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise APIError(
            400,
            "Send the dataset as multipart/form-data with a 'file' part.",
            code="invalid_content_type",
            param="file",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FRAMING_BYTES:
        raise too_large(max_bytes)  # refuse before reading a byte; 64 KiB covers the multipart framing

    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
    lock_part(fd)
    out = os.fdopen(fd, "wb")
    receiver = _MultipartReceiver(out, field_name, settings)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]  # a TypedDict of the same keys
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
        if not receiver.seen_file:
            raise APIError(
                400, "Missing the 'file' part (multipart/form-data).", code="missing_required_parameter", param="file"
            )
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
        raise APIError(
            400, f"Could not read the multipart body: {exc}", code="invalid_multipart", param="file"
        ) from None
    return ReceivedFile(
        Path(tmp_name),
        receiver.filename or "upload.jsonl",
        receiver.file_bytes,
        receiver.digest.hexdigest(),
        receiver.fields,
    )

"""Public identifiers and names: `file-<24 hex>` for datasets, `ftjob-<24 hex>` for jobs, `ft:...` for the fine-tuned
model (the OpenAI shapes), `cmp-<24 hex>` for comparisons, `ftevent-<16 hex>` and `ftckpt-<16 hex>` for events and
checkpoints (opaque, below)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path


def new_dataset_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def new_comparison_id() -> str:
    return "cmp-" + secrets.token_hex(12)


def fine_tuned_model_name(model: str, organization: str, suffix: str | None, job_id: str) -> str:
    """`ft:<model>:<organization>:<suffix>:<job id>`, the OpenAI shape (the suffix part is empty without one)."""
    return f"ft:{model}:{organization}:{suffix or ''}:{job_id}"


# The widest integer a row key or step may hold (Postgres integer). A larger value from a query string or a
# cursor would overflow the database driver's bind (a 500), so it is refused as invalid input instead.
MAX_INT = 2**31 - 1


def parse_int(text: str) -> int | None:
    """A non-negative integer no larger than MAX_INT, or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_INT else None


# ---- event and checkpoint ids: opaque ------------------------------------------------------------------------------
# Their rows' keys are one global counter: shown as they are, two ids a tenant sees a minute apart would tell how many
# events every other tenant caused meanwhile. So the API shows each key through a keyed permutation of 64-bit numbers
# (a 4-round Feistel network over HMAC-SHA256, a pseudorandom permutation): reversible with the key, so ids still
# work as cursors, and without it unrelated to the counter. The key is the deployment's (a file on the shared data
# volume, so every API process agrees and ids survive restarts); until one is set, a per-process one.

_id_key = secrets.token_bytes(32)


def use_id_key(key: bytes) -> None:
    global _id_key
    _id_key = key


def load_id_key(path: Path) -> bytes:
    """The key in `path`, made on first use. Created by linking a complete temp file (fails if another process got
    there first), so no process ever reads a half-written key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".id-key-")
        try:
            os.write(fd, secrets.token_bytes(32))
            os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            os.unlink(temp)
    return path.read_bytes()


def _half(kind: bytes, round_: int, value: int) -> int:
    mac = hmac.new(_id_key, kind + bytes([round_]) + value.to_bytes(4, "big"), hashlib.sha256).digest()
    return int.from_bytes(mac[:4], "big")


def _permute(kind: bytes, number: int, inverse: bool = False) -> int:
    left, right = number >> 32, number & 0xFFFFFFFF
    rounds = range(3, -1, -1) if inverse else range(4)
    for round_ in rounds:
        if inverse:
            left, right = right ^ _half(kind, round_, left), left
        else:
            left, right = right, left ^ _half(kind, round_, right)
    return (left << 32) | right


def _public(prefix: str, kind: bytes, key: int) -> str:
    return f"{prefix}{_permute(kind, key):016x}"


def _parse(prefix: str, kind: bytes, public_id: str) -> int | None:
    raw = public_id.removeprefix(prefix)
    if len(raw) != 16 or not all(c in "0123456789abcdef" for c in raw):
        return None
    key = _permute(kind, int(raw, 16), inverse=True)
    return key if key <= MAX_INT else None


def event_public_id(event_id: int) -> str:
    return _public("ftevent-", b"event", event_id)


def parse_event_id(public_id: str) -> int | None:
    return _parse("ftevent-", b"event", public_id)


def checkpoint_public_id(checkpoint_id: int) -> str:
    return _public("ftckpt-", b"checkpoint", checkpoint_id)


def parse_checkpoint_id(public_id: str) -> int | None:
    return _parse("ftckpt-", b"checkpoint", public_id)

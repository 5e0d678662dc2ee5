"""Public identifiers: `file-<24 hex>` for datasets, `ftjob-<24 hex>` for jobs (the OpenAI shapes)."""

from __future__ import annotations

import secrets


def new_dataset_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def event_public_id(event_id: int) -> str:
    return f"ftevent-{event_id}"


def parse_event_id(public_id: str) -> int | None:
    raw = public_id.removeprefix("ftevent-")
    return int(raw) if raw.isdigit() else None


def checkpoint_public_id(checkpoint_id: int) -> str:
    return f"ftckpt-{checkpoint_id}"

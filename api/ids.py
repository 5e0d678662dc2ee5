"""Public identifiers and names: `file-<24 hex>` for datasets, `ftjob-<24 hex>` for jobs, `ft:...` for the fine-tuned
model (the OpenAI shapes)."""

from __future__ import annotations

import secrets


def new_dataset_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def fine_tuned_model_name(model: str, organization: str, suffix: str | None, job_id: str) -> str:
    """`ft:<model>:<organization>:<suffix>:<job id>`, the OpenAI shape (the suffix part is empty without one)."""
    return f"ft:{model}:{organization}:{suffix or ''}:{job_id}"


def event_public_id(event_id: int) -> str:
    return f"ftevent-{event_id}"


# The widest integer a row key or step may hold (Postgres integer). A larger value from a query string or a
# cursor would overflow the database driver's bind (a 500), so it is refused as invalid input instead.
MAX_INT = 2**31 - 1


def parse_int(text: str) -> int | None:
    """A non-negative integer no larger than MAX_INT, or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_INT else None


def parse_event_id(public_id: str) -> int | None:
    return parse_int(public_id.removeprefix("ftevent-"))


def checkpoint_public_id(checkpoint_id: int) -> str:
    return f"ftckpt-{checkpoint_id}"

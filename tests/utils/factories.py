"""Factories: tenants with keys, dataset files in each format, uploads and jobs through the API."""

from __future__ import annotations

import io
import json
import secrets
from typing import Any

TOPICS = [
    "apples",
    "rivers",
    "binary search",
    "the moon",
    "tea",
    "volcanoes",
    "chess",
    "bread",
    "rain",
    "owls",
    "bicycles",
    "prime numbers",
    "glaciers",
    "violins",
    "ants",
    "lighthouses",
]


def chat_rows(n: int = 24) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Tell me one fact about {topic} (#{i})."},
                    {
                        "role": "assistant",
                        "content": f"Fact {i}: {topic} are worth learning about; {'ab' * (i % 5 + 1)}.",
                    },
                ]
            }
        )
    return rows


def alpaca_rows(n: int = 12) -> list[dict[str, Any]]:
    return [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(n)]


def completion_rows(n: int = 12) -> list[dict[str, Any]]:
    return [{"prompt": f"Count to {i}:", "completion": " ".join(str(k) for k in range(1, i + 2))} for i in range(n)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def new_tenant_key(database_url: str, tenant: str | None = None) -> tuple[str, str]:
    """A fresh tenant with one key, straight into the database (as `uds keys create` does). Returns (tenant, key)."""
    from api.auth import add_key
    from api.db import session_factory

    tenant = tenant or f"tenant-{secrets.token_hex(4)}"
    with session_factory(database_url)() as session:
        key = add_key(session, tenant)
        session.commit()
    return tenant, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client, key: str | None, data: bytes, filename: str = "train.jsonl", expect: int | None = 201, **fields):
    headers = bearer(key) if key else {}
    response = client.post(
        "/api/v1/datasets", headers=headers, files={"file": (filename, io.BytesIO(data))}, data=fields or None
    )
    if expect is not None:
        assert response.status_code == expect, response.text
    return response


def create_job(client, key: str | None, dataset_id: str, expect: int | None = 201, **fields):
    body = {"dataset_id": dataset_id, "model": "uds-tiny", **fields}
    response = client.post("/api/v1/jobs", headers=bearer(key) if key else {}, json=body)
    if expect is not None:
        assert response.status_code == expect, response.text
    return response


TINY_JOB = dict(  # a few real steps of uds-tiny on CPU: seconds, not minutes
    candidate_batch_size=8,
    budget=0.25,
    max_steps=6,
    max_seq_len=64,
    micro_batch_size=2,
    lora_r=4,
    lora_alpha=8,
    checkpoint_every=3,
    learning_rate=1e-3,
    warmup_ratio=0.0,
)


def job_row(sessions, job_id):
    """The job's row as it is now in the database."""
    from api.models import Job

    with sessions() as session:
        return session.get(Job, job_id)


def set_job(sessions, job_id, **values) -> None:
    """Set columns of a job directly, as a worker or an earlier process would have left them."""
    from sqlalchemy import update

    from api.models import Job

    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))

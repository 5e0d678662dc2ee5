"""Request and response bodies of the short tasks on a finished job: merged exports and try-it generations.

Kept apart from api/schemas/__init__.py (the job and dataset families) because they are one family of their own: each is
a `job_tasks` row (api/models.py JobTask) seen through its kind.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.models import JobTask


class TaskError(BaseModel):
    code: str | None
    message: str | None


def _error(task: JobTask) -> TaskError | None:
    return TaskError(code=task.error_code, message=task.error_message) if task.status == "failed" else None


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["merged"] = Field(
        default="merged",
        description="merged: base + adapter as one transformers folder. "
        "The adapter itself is GET /api/v1/jobs/{id}/adapter.",
    )


class ExportPublic(BaseModel):
    id: str
    object: Literal["export"] = "export"
    job_id: str
    kind: str
    status: str
    bytes: int | None = None
    sha256: str | None = None
    download_url: str | None = None
    error: TaskError | None = None
    created_at: dt.datetime
    finished_at: dt.datetime | None = None


def export_public(task: JobTask) -> ExportPublic:
    done = task.status == "succeeded"
    return ExportPublic(
        id=task.id,
        job_id=task.job_id,
        kind=task.params.get("kind", "merged"),
        status=task.status,
        bytes=task.bytes,
        sha256=task.sha256,
        error=_error(task),
        created_at=task.created_at,
        finished_at=task.finished_at,
        download_url=f"/api/v1/exports/{task.id}/content" if done else None,
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class GenerateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(default=None, max_length=32_000, description="One user message; or give messages.")
    messages: list[ChatMessage] | None = Field(default=None, max_length=64)
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy (the same answer every time).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_input(self) -> "GenerateCreate":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and (not self.messages or self.messages[-1].role == "assistant"):
            raise ValueError("messages must end with a user (or system) message: the answer is what is generated")
        return self

    def chat(self) -> list[dict]:
        if self.prompt is not None:
            return [{"role": "user", "content": self.prompt}]
        return [m.model_dump() for m in self.messages or []]


class Answer(BaseModel):
    text: str
    tokens: int
    seconds: float


class GenerationPublic(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    job_id: str
    status: str
    messages: list[dict]
    max_new_tokens: int
    temperature: float
    fine_tuned: Answer | None = Field(default=None, description="Base model + this job's adapter.")
    base: Answer | None = Field(default=None, description="The base model alone, for comparison.")
    cancel_requested: bool = False
    error: TaskError | None = None
    created_at: dt.datetime
    finished_at: dt.datetime | None = None


def generation_public(task: JobTask) -> GenerationPublic:
    result = task.result or {}
    return GenerationPublic(
        id=task.id,
        job_id=task.job_id,
        status=task.status,
        messages=task.params["messages"],
        max_new_tokens=task.params["max_new_tokens"],
        temperature=task.params["temperature"],
        fine_tuned=result.get("fine_tuned"),
        base=result.get("base"),
        cancel_requested=task.cancel_requested,
        error=_error(task),
        created_at=task.created_at,
        finished_at=task.finished_at,
    )

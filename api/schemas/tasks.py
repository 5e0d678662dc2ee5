"""Request and response bodies of the short tasks on a finished job: exports (merged, GGUF) and try-it generations.

Kept apart from api/schemas/__init__.py (the job and dataset families) because they are one family of their own: each is
a `job_tasks` row (api/models.py JobTask) seen through its kind.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.models import JobTask
from uds.gguf_support import DEFAULT_QUANTIZATION


class TaskError(BaseModel):
    code: str | None
    message: str | None


def _error(task: JobTask) -> TaskError | None:
    return TaskError(code=task.error_code, message=task.error_message) if task.status == "failed" else None


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `true` is not 1: a 400 naming the field
    kind: Literal["merged", "gguf"] = Field(
        default="merged",
        description="merged: base + adapter as one transformers folder (.tar.gz). gguf: one GGUF file for "
        "llama.cpp, Ollama and LM Studio, with an Ollama Modelfile next to it (.tar). "
        "The adapter itself is GET /api/v1/jobs/{id}/adapter.",
    )
    quantization: Literal["f16", "q8_0", "f32"] | None = Field(
        default=None,
        description="gguf only (default f16): f16 halves the float32 size at no visible cost; q8_0 is about a "
        "quarter of it (8-bit blocks of 32 weights with one scale); f32 keeps the merged weights exactly.",
    )

    @model_validator(mode="after")
    def _quantization_is_for_gguf(self) -> "ExportCreate":
        if self.kind != "gguf" and self.quantization is not None:
            raise ValueError("quantization applies to kind gguf only")
        return self

    def params(self) -> dict:
        """The export's identity: two requests with the same params are the same export."""
        if self.kind == "gguf":
            return {"kind": "gguf", "quantization": self.quantization or DEFAULT_QUANTIZATION}
        return {"kind": self.kind}


class ExportPublic(BaseModel):
    id: str
    object: Literal["export"] = "export"
    job_id: str
    kind: str
    quantization: str | None = None
    status: str
    cancel_requested: bool = False
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
        quantization=task.params.get("quantization"),
        status=task.status,
        cancel_requested=task.cancel_requested,
        bytes=task.bytes,
        sha256=task.sha256,
        error=_error(task),
        created_at=task.created_at,
        finished_at=task.finished_at,
        download_url=f"/api/v1/exports/{task.id}/content" if done else None,
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `true` is not 1: a 400 naming the field
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class GenerateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `true` is not 1: a 400 naming the field
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
    prompt_tokens: int | None = Field(default=None, description="Tokens of the prompt the model was given.")
    prompt_truncated: bool = Field(
        default=False,
        description="The conversation was longer than the model's context minus max_new_tokens and was cut from "
        "the left (oldest turns first).",
    )
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
        prompt_tokens=result.get("prompt_tokens"),
        prompt_truncated=bool(result.get("prompt_truncated")),
        cancel_requested=task.cancel_requested,
        error=_error(task),
        created_at=task.created_at,
        finished_at=task.finished_at,
    )

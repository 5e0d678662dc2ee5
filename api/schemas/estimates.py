"""The response of POST /api/v1/jobs/estimate (computed in uds/estimate.py; its docstring has the formulas)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MemoryParts(BaseModel):
    """Bytes: an estimate of the largest allocations on one device kind, not a measurement."""

    weights: int = Field(description="The base model at the device's precision (float32 CPU, bfloat16 CUDA).")
    lora: int = Field(description="LoRA values, their gradients and AdamW's two moments, float32.")
    selector: int = Field(description="UDS's memory buffer and projection matrices (0 for other methods).")
    training_activations: int = Field(description="One micro-batch of max_seq_len tokens, forward and backward.")
    scoring_activations: int = Field(description="One chunk of the no-grad scoring pass.")
    peak: int = Field(description="weights + lora + selector + the larger activation figure.")


class TimeEstimate(BaseModel):
    seconds: float | None = Field(description="scoring_seconds + training_seconds; null without a measurement.")
    scoring_seconds: float | None = Field(description="candidates_scored / scoring_rate.")
    training_seconds: float | None = Field(description="tokens_trained / training_rate.")
    scoring_rate: float | None = Field(description="Median candidates scored per second of scoring.")
    training_rate: float | None = Field(description="Median tokens trained per second of training.")
    based_on: int = Field(description="Succeeded jobs of this model, method and device kind the medians are over.")
    device_kind: str | None = Field(description='Where those jobs ran ("cpu", "cuda <GPU name>").')
    reason: str | None = Field(description='Why there is no time ("no measurement yet"), else null.')


class JobEstimate(BaseModel):
    object: Literal["job.estimate"] = "job.estimate"
    model: str
    method: str
    dataset_id: str
    steps: int
    groups_per_step: int
    candidates_scored: int
    examples_trained: int
    tokens_trained: int
    tokens_exact: bool = Field(
        description="False when selection decides which rows are trained (then examples_trained x mean row tokens), "
        "or when the tokenizer's count is approximate."
    )
    tokens_counted: str = Field(description='"exact" (byte-level tokenizers) or "approximate (N bytes a token)".')
    dataset_rows: int
    dataset_tokens: int = Field(description="The dataset's tokens, each row cut at max_seq_len.")
    memory: dict[str, MemoryParts] | None = Field(description="By device kind: cpu and cuda; null, see memory_note.")
    memory_note: str | None
    time: TimeEstimate

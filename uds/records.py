"""What a training run reports, declared once: the step record and the run's phases.

The trainer builds a `StepRecord` per optimizer step; every store derives from it: the database logger's
columns, the API's step-metrics model, the JSONL logger. Torch-free, so the API can import it.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args


class StepRecord(TypedDict):
    """One optimizer step, as the trainer hands it to `TrainLogger.log_step`."""

    step: int
    total_steps: int
    epoch: float  # 1-based: the epoch the step belongs to
    loss: float
    token_accuracy: float
    learning_rate: float
    grad_norm: float
    tokens_trained: int
    candidates: int
    selected: int
    groups: int
    time_scoring: float  # seconds of the measure and select halves
    time_training: float  # seconds of forward + backward + optimizer step on the picks
    alpha: float | None  # uds only
    stats: dict[str, Any]  # summaries of utility, diversity, score (candidates, selected), groups, length;
    # device_memory_bytes (torch.cuda.memory_allocated) on a CUDA device
    eval_loss: float | None  # set on evaluation steps
    eval_accuracy: float | None
    selections: list[dict[str, Any]]  # per candidate: row, selected, utility, diversity, score


# The per-step numbers every store keeps as columns (the step itself and `stats` travel besides them; `groups`,
# `total_steps` and `selections` do not: the job row and the selections table hold those).
METRIC_FIELDS = (
    "epoch",
    "loss",
    "token_accuracy",
    "learning_rate",
    "grad_norm",
    "tokens_trained",
    "candidates",
    "selected",
    "time_scoring",
    "time_training",
    "alpha",
    "eval_loss",
    "eval_accuracy",
)
assert set(METRIC_FIELDS) <= set(StepRecord.__annotations__)


# What a run is doing between or after steps, what a person waits on. loading: the model and the data; training:
# steps; evaluating: the eval file (minutes on a large one); saving: the final checkpoint and adapter.
Phase = Literal["loading", "training", "evaluating", "saving"]
PHASES: tuple[Phase, ...] = get_args(Phase)

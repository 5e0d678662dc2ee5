"""The OpenAI objects (file, fine_tuning.job, fine_tuning.job.event, fine_tuning.job.checkpoint, model, list) and
the job-creation request, with the field names of the OpenAI API reference. Times are Unix seconds."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from api.schemas import ListPage

Auto = Literal["auto"]


# The OpenAI list object is the native one: {object: "list", data, has_more, first_id, last_id}.
CursorList = ListPage


# ---- files ----------------------------------------------------------------------------------------------


class FileObject(BaseModel):
    model_config = ConfigDict(extra="allow")  # datasets add format, n_examples, sha256; result files their job

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results"]
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# ---- models ---------------------------------------------------------------------------------------------


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


# ---- fine-tuning jobs: the request ----------------------------------------------------------------------


def auto_or(kind: type, low: float, high: float | None = None, low_inclusive: bool = True):
    """ "auto" or a number in range, as one check, so an error names the field once (a plain union would report
    one error per member, at paths like `n_epochs.literal['auto']`)."""

    def check(value: Any):
        if value == "auto":
            return value
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (kind is int and not float(value).is_integer()):
            raise ValueError(f'must be "auto" or {"an integer" if kind is int else "a number"}, got {value!r}')
        if value < low or (value == low and not low_inclusive) or (high is not None and value > high):
            bounds = f"{'>=' if low_inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise ValueError(f"must be {bounds}, got {value!r}")
        return kind(value)

    return Annotated[Auto | kind, PlainValidator(check, json_schema_input_type=Auto | kind)]


if TYPE_CHECKING:  # a call is no type for a checker: what each validator accepts
    AutoEpochs = Auto | int
    AutoBatchSize = Auto | int
    AutoMultiplier = Auto | float
else:
    AutoEpochs = auto_or(int, 1, 1000)
    AutoBatchSize = auto_or(int, 1, 4096)
    AutoMultiplier = auto_or(float, 0, low_inclusive=False)


class HyperparametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: AutoEpochs | None = None
    batch_size: AutoBatchSize | None = None
    learning_rate_multiplier: AutoMultiplier | None = None


class SupervisedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn | None = None


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedIn | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(BaseModel):
    """The OpenAI fields, plus any UDS setting as an extra field (the client's `extra_body`): `selection_method`
    (uds, random, max_loss, max_grad, full), `budget`, `alpha`, `candidate_batch_size`, `lora_r`, ... Unknown
    extra fields are refused, so a misspelt setting never silently falls back to its default."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=512)
    training_file: str = Field(max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, strict=True)  # `true` is not seed 1
    metadata: dict[str, str] | None = None
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    integrations: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("at most 16 keys")
        for key, item in value.items():
            if len(key) > 64:
                raise ValueError(f"key {key[:20]!r}... is longer than 64 characters")
            if len(item) > 512:
                raise ValueError(f"the value of {key!r} is longer than 512 characters")
        return value


# ---- fine-tuning jobs: the objects ----------------------------------------------------------------------


class Hyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    """The reference's fields, then (extra) every resolved UDS setting under its request name, `name`, and
    `progress` (step, selection counters, alpha in use)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]] = []
    metadata: dict[str, Any] | None
    method: Method
    suffix: str | None = None
    user_provided_suffix: str | None = None


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]


class CheckpointMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")  # valid_exact_match

    step: int
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    available: bool  # older checkpoints are pruned from disk (keep_checkpoints); their record stays

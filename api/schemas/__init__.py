"""Request and response models (the FastAPI template's schema families: XCreate in, XPublic out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.eta import eta_seconds
from api.ids import checkpoint_public_id, event_public_id
from api.models import Checkpoint, Dataset, Job, JobEvent, StepMetric, utcnow
from api.schemas.integrations import Integration
from uds.config import TrainConfig, setting_choices, setting_help
from uds.methods import REGISTRY
from uds.records import METRIC_FIELDS, Phase, StepRecord

T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, data: list[T], has_more: bool) -> "ListPage[T]":
        """A page of objects with an `id`; first_id/last_id are the cursors a client passes as `after`."""
        items: list[Any] = data  # T is unbounded (pydantic validates against it); every page's objects have an id
        return cls(
            data=data,
            has_more=has_more,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
        )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class Problem(BaseModel):
    line: int
    reason: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
    problems: list[Problem] | None = None


# ---- datasets -----------------------------------------------------------------------------------------------


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["dataset"] = "dataset"
    filename: str
    purpose: str
    format: str | None
    bytes: int
    sha256: str
    n_examples: int
    status: str
    created_at: dt.datetime


def dataset_public(d: Dataset) -> DatasetPublic:
    return DatasetPublic.model_validate(d)


class DatasetDeleted(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    deleted: bool = True


class JobDeleted(BaseModel):
    id: str
    object: Literal["job"] = "job"
    deleted: bool = True


class DatasetRow(BaseModel):
    row: int
    line: int
    preview: str
    messages: list[dict[str, Any]]


class DatasetRows(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetRow]
    has_more: bool
    total: int


# ---- models ------------------------------------------------------------------------------------------------


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    kind: Literal["base", "fine-tune"]
    owned_by: str
    base_model: str | None = None
    job_id: str | None = None
    created_at: dt.datetime | None = None
    # Base models: where they come from and what a user chooses by (None where the files do not say).
    source: Literal["builtin", "hub", "folder", "gguf", "allow-list"] | None = None
    revision: str | None = None
    quantization: str | None = Field(default=None, description="A model made from a GGUF file: its quantization.")
    original_file: str | None = Field(default=None, description="The GGUF file it was made from (hub id/file).")
    architecture: str | None = None
    parameters: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    tied_embeddings: bool | None = None
    linear_head: bool | None = Field(default=None, description="True: scored without logits; False: explicit fallback.")
    head_note: str | None = None
    linear_modules: list[str] | None = Field(default=None, description="What lora_targets may name.")


# ---- jobs --------------------------------------------------------------------------------------------------

MetadataValue = str | int | float | bool | None


# TrainConfig fields that are paths on the worker's host: filled in at run time, never stored or shown.
HOST_FIELDS = ("dataset_path", "eval_dataset_path", "output_dir", "models_dir", "device")


class JobRequest(BaseModel):
    """What a job trains on and how it is labelled; `JobCreate` adds every TrainConfig setting to it."""

    # strict: `"epochs": true` or `"budget": "0.5"` is a 400 naming the field, not silently coerced (an int is
    # still a valid float).
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset_id: str = Field(max_length=64)
    eval_dataset_id: str | None = Field(default=None, max_length=64)
    model: str = Field(max_length=512, description=setting_help("model"))
    name: str | None = Field(default=None, max_length=256)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    metadata: dict[str, MetadataValue] | None = Field(default=None, max_length=64)
    # Not a TrainConfig setting: where the worker mirrors the step metrics (api/schemas/integrations.py).
    integrations: list[Integration] | None = Field(
        default=None,
        max_length=4,
        description=(
            'Trackers the step metrics are mirrored to: {"type": "mlflow", "tracking_uri", "experiment"} or OpenAI\'s '
            '{"type": "wandb", "wandb": {"project", ...}} (offline mode). A tracker outage never fails the job.'
        ),
    )

    def train_settings(self) -> dict[str, Any]:
        config_fields = {"model", *TRAIN_SETTINGS}
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k in config_fields and v is not None}


def _setting_field(name: str, annotation: Any) -> tuple[Any, Any]:
    """One TrainConfig setting as an optional request field, its help and choices carried into the OpenAPI schema.

    Only described, not validated here: TrainConfig.from_dict is the one validation (and resolves `recipe`), so the
    API, `uds train` and the library refuse the same values with the same message.
    """
    choices = setting_choices(name)
    description = setting_help(name) + (f" One of: {', '.join(choices)}." if choices else "")
    default = TrainConfig.__dataclass_fields__[name].default
    extra: dict[str, Any] = {}
    if isinstance(default, (int, float, str, bool)):
        extra["examples"] = [default]  # the value an omitted setting takes (the field's own default is null)
    if choices:
        extra["x-choices"] = list(choices)  # for forms (the dashboard's selects); not a JSON-schema constraint
    if name == "method":  # how the dashboard names and explains each method: the registry's own words
        extra["x-methods"] = [dataclasses.asdict(method) for method in REGISTRY]
    return _words_as_str(annotation) | None, Field(
        default=None, description=description, json_schema_extra=extra or None
    )


def _words_as_str(annotation: Any) -> Any:
    """Literal["auto", "paper"] inside a setting's type becomes str: the type says what shape a value has, and
    TrainConfig says which words are allowed (with its own message naming the setting)."""
    if typing.get_origin(annotation) is Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        result = None
        for arg in typing.get_args(annotation):
            loose = _words_as_str(arg)
            result = loose if result is None else result | loose
        return result
    return annotation


# Every TrainConfig setting but the host paths and `model` (a required field of JobRequest); generated, so a new
# setting is a request field, a flag of `uds train` and a hint in the OpenAPI schema at once.
TRAIN_SETTINGS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in HOST_FIELDS and f.name != "model"
)
if TYPE_CHECKING:

    class JobCreate(JobRequest):
        """JobRequest and every TrainConfig setting (optional), as built below; the settings are typed Any here."""

        def __getattr__(self, name: str) -> Any: ...
else:
    JobCreate = create_model(
        "JobCreate",
        __base__=JobRequest,
        __doc__=(
            "Every TrainConfig setting but the host paths may be given; omitted ones take the `recipe`'s value if "
            "one is named, else the TrainConfig default (and checkpoint_every the server's UDS_CHECKPOINT_EVERY). "
            'Resolution and validation are TrainConfig.from_dict\'s. `alpha` is a number, "paper" or "auto"; '
            "`candidate_batch_size` is one selection group (B), and `train_batch_size` the selected examples per "
            "optimizer step."
        ),
        **{name: _setting_field(name, typing.get_type_hints(TrainConfig)[name]) for name in TRAIN_SETTINGS},
    )


class Progress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float | None
    fraction: float | None


class JobError(BaseModel):
    code: str | None
    message: str | None
    param: str | None


class AdapterInfo(BaseModel):
    bytes: int | None
    sha256: str | None
    url: str


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    name: str | None
    suffix: str | None
    status: str
    cancel_requested: bool
    model: str
    method: str
    budget: float
    dataset_id: str
    eval_dataset_id: str | None
    config: dict[str, Any]
    metadata: dict[str, Any] | None
    seed: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: Progress
    eta_seconds: float | None
    phase: Phase | None = Field(None, description="while running: what the job is doing")
    phase_started_at: dt.datetime | None = None
    eval_seconds: float | None = Field(None, description="how long the job's last evaluation took")
    examples_scored: int
    examples_trained: int
    tokens_trained: int
    backward_saved_fraction: float | None
    alpha_used: float | None
    latest_loss: float | None
    attempts: int
    error: JobError | None
    adapter: AdapterInfo | None
    fine_tuned_model: str | None
    integrations: list[dict[str, Any]] | None = None
    comparison_id: str | None = Field(None, description="the comparison (POST /comparisons) that made this job")


def job_public(job: Job, now: dt.datetime | None = None) -> JobPublic:
    now = now or utcnow()
    fraction = None
    if job.total_steps:
        fraction = round(min(1.0, job.current_step / job.total_steps), 4)
    saved = None
    if job.examples_scored:
        saved = round(1.0 - job.examples_trained / job.examples_scored, 4)
    error = JobError(code=job.error_code, message=job.error_message, param=job.error_param) if job.error_code else None
    adapter = None
    if job.status == "succeeded" and job.adapter_path:
        adapter = AdapterInfo(bytes=job.adapter_bytes, sha256=job.adapter_sha256, url=f"/api/v1/jobs/{job.id}/adapter")
    return JobPublic(
        id=job.id,
        name=job.name,
        suffix=job.suffix,
        status=job.status,
        cancel_requested=bool(job.cancel_requested),
        model=job.model,
        method=job.method,
        budget=job.budget,
        dataset_id=job.dataset_id,
        eval_dataset_id=job.eval_dataset_id,
        config=job.config,
        metadata=job.metadata_,
        seed=job.seed,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=Progress(step=job.current_step, total_steps=job.total_steps, epoch=job.epoch, fraction=fraction),
        eta_seconds=eta_seconds(job, now),
        phase=job.phase if job.status == "running" else None,
        phase_started_at=job.phase_started_at if job.status == "running" else None,
        eval_seconds=job.eval_seconds,
        examples_scored=job.examples_scored,
        examples_trained=job.examples_trained,
        tokens_trained=job.tokens_trained,
        backward_saved_fraction=saved,
        alpha_used=job.alpha_used,
        latest_loss=job.latest_loss,
        attempts=job.attempts,
        error=error,
        adapter=adapter,
        fine_tuned_model=job.fine_tuned_model,
        integrations=job.integrations,
        comparison_id=job.comparison_id,
    )


# ---- metrics, selections, events, checkpoints --------------------------------------------------------------


class _MetricBase(BaseModel):
    # Read from the StepMetric row by name: a column renamed without the record fails validation, never shows None.
    model_config = ConfigDict(from_attributes=True)

    step: int
    stats: dict[str, Any] | None
    created_at: dt.datetime


def _metric_fields() -> dict[str, Any]:
    """The step record's stored numbers (`uds.records.METRIC_FIELDS`), each as its record type or None."""
    hints = typing.get_type_hints(StepRecord)
    return {name: (hints[name] | None, ...) for name in METRIC_FIELDS}


if TYPE_CHECKING:

    class MetricPublic(_MetricBase):
        """One step: the step record's stored numbers, as built below; typed Any here."""

        def __getattr__(self, name: str) -> Any: ...
else:
    MetricPublic = create_model(
        "MetricPublic", __base__=_MetricBase, __doc__="One optimizer step's metrics.", **_metric_fields()
    )


def metric_public(m: StepMetric) -> MetricPublic:
    return MetricPublic.model_validate(m)


class MetricsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[MetricPublic]
    has_more: bool
    last_step: int


class LengthBiasPublic(BaseModel):
    """Does the job pick the most useful examples, or just the longest? Means over all of its selection groups
    (each step's within-group Spearman correlations weighted by the groups that had one), and mean token counts
    weighted by each step's candidates and selected examples. Nulls where no step had the figure yet."""

    object: Literal["job.length_bias"] = "job.length_bias"
    job_id: str
    steps: int
    groups: int
    spearman_utility_length: float | None
    spearman_score_length: float | None
    groups_with_utility_rho: int
    groups_with_score_rho: int
    mean_length_candidates: float | None
    mean_length_selected: float | None
    selected_to_candidates_length: float | None  # > 1: the picks are longer than the candidates on average
    alpha_setting: float | str | None  # the configured alpha: a number, "paper" or "auto"
    alpha_used: float | None  # the latest step's alpha
    alpha_paper: float | None  # what "paper" is for this job (from the run summary: known once it has succeeded)


class SelectionPublic(BaseModel):
    id: str  # "<step>:<row>", the pagination cursor
    object: Literal["selection"] = "selection"
    step: int
    row: int
    selected: bool
    utility: float | None
    diversity: float | None
    score: float | None
    preview: str | None


class RowSummary(BaseModel):
    row: int
    times_selected: int
    times_candidate: int
    mean_score: float | None
    last_step: int
    preview: str | None


class SelectionSummary(BaseModel):
    object: Literal["list"] = "list"
    data: list[RowSummary]
    has_more: bool
    order: Literal["most", "least"]
    rows_seen: int


class EventPublic(BaseModel):
    id: str
    object: Literal["event"] = "event"
    created_at: dt.datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None


def event_public(e: JobEvent) -> EventPublic:
    return EventPublic(
        id=event_public_id(e.id), created_at=e.created_at, level=e.level, type=e.type, message=e.message, data=e.data
    )


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["checkpoint"] = "checkpoint"
    job_id: str
    step: int
    metrics: dict[str, Any] | None
    created_at: dt.datetime
    available: bool  # older checkpoints are pruned from disk (keep_checkpoints); their record stays


def checkpoint_public(c: Checkpoint, available: bool) -> CheckpointPublic:
    return CheckpointPublic(
        id=checkpoint_public_id(c.id),
        job_id=c.job_id,
        step=c.step,
        metrics=c.metrics,
        created_at=c.created_at,
        available=available,
    )


class Info(BaseModel):
    version: str
    auth_required: bool
    mode: Literal["embedded", "distributed"]
    models: list[str]
    max_upload_bytes: int
    max_comparison_jobs: int = Field(description="most jobs one comparison may create (UDS_MAX_COMPARISON_JOBS)")
    max_active_jobs: int = Field(
        default=0, description="unfinished jobs a tenant may have (UDS_MAX_ACTIVE_JOBS); 0: none"
    )

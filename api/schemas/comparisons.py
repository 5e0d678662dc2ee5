"""Request and response models of /api/v1/comparisons: "compare methods" as a group of ordinary jobs, judged by
uds.comparison (the quality benchmark's code). Kept apart from api/schemas/__init__.py, which they build on."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from api.schemas import TRAIN_SETTINGS, JobCreate, MetadataValue
from uds.config import TrainConfig
from uds.methods import SELECTORS

if TYPE_CHECKING:
    Selector = str
else:
    Selector = Literal[SELECTORS]  # the registry's selecting methods, an enum in the OpenAPI schema
DEFAULT_BUDGETS = (0.125, 0.25)
ComparisonStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

# Job fields a comparison sets itself (per run, or from its own fields): refused inside `settings`, saying why.
RESERVED_SETTINGS = {
    "method": "each run's method comes from the comparison's `methods` (and `include_full`)",
    "budget": "each run's budget comes from the comparison's `budgets` (full runs at 1.0)",
    "seed": "each method runs once per seed 0..`seeds`-1, the seed shared so the runs are paired",
    "dataset_id": "give it as the comparison's own `dataset_id`",
    "eval_dataset_id": "give it as the comparison's own `eval_dataset_id`",
    "model": "give it as the comparison's own `model`",
    "name": "the comparison's `name` names its jobs",
    "metadata": "give it as the comparison's own `metadata`",
    "suffix": "a comparison's jobs take no suffix",
    "integrations": "a comparison's jobs take no tracker integrations",
}
SHARED_SETTINGS = tuple(name for name in TRAIN_SETTINGS if name not in RESERVED_SETTINGS)


class _SharedSettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_reserved(cls, data: Any) -> Any:
        # Raised with the key in `loc`, so the 400's param is `settings.<key>` (as for any other bad setting).
        reserved = [key for key in RESERVED_SETTINGS if isinstance(data, dict) and key in data]
        if reserved:
            raise ValidationError.from_exception_data(
                "ComparisonSettings",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "reserved_setting", "not a shared setting: {why}", {"why": RESERVED_SETTINGS[key]}
                        ),
                        loc=(key,),
                        input=data[key],
                    )
                    for key in reserved
                ],
            )
        return data


if TYPE_CHECKING:

    class ComparisonSettings(_SharedSettingsBase):
        def __getattr__(self, name: str) -> Any: ...
else:
    # The job request's own fields (types, help, choices), so a setting means here what it means in POST /jobs.
    ComparisonSettings = create_model(
        "ComparisonSettings",
        __base__=_SharedSettingsBase,
        __doc__="Training settings shared by every run of a comparison: any setting of POST /jobs but the per-run "
        "ones (method, budget, seed) and the job's own fields (datasets, model, name, suffix, metadata, integrations).",
        **{name: (JobCreate.model_fields[name].annotation, JobCreate.model_fields[name]) for name in SHARED_SETTINGS},
    )


def _unique(values: list) -> list:
    if len(set(values)) != len(values):
        raise PydanticCustomError("duplicate_value", "each value may be given once, got {values}", {"values": values})
    return values


class ComparisonCreate(BaseModel):
    # strict, as JobRequest: `"seeds": "3"` is a 400 naming the field, not silently coerced.
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset_id: str = Field(max_length=64, description="Training data (`file-...`).")
    eval_dataset_id: str = Field(max_length=64, description="Held-out rows every run is judged on.")
    name: str | None = Field(default=None, max_length=256)
    model: str = Field(default=TrainConfig.model, max_length=512, description="A base model from GET /models.")
    methods: list[Selector] = Field(default_factory=lambda: list(SELECTORS), min_length=1, max_length=len(SELECTORS))
    budgets: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: list(DEFAULT_BUDGETS),
        min_length=1,
        max_length=4,
        description="Fractions of the candidates trained on, each in (0, 1).",
    )
    seeds: int = Field(
        default=3,
        ge=2,
        le=10,
        description="Each method runs once per seed 0..seeds-1 (paired). The defaults make 3 x (4 x 2 + 1) = 27 "
        "jobs, within the default UDS_MAX_ACTIVE_JOBS.",
    )
    include_full: bool = Field(default=True, description="Also train on all the data (method full, budget 1.0).")
    label_field: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description='A key rows of the training file carry a string label under (e.g. "kind"): the report then '
        "shows the share of each label each method picked.",
    )
    settings: ComparisonSettings | None = Field(default=None, description="Training settings shared by every run.")
    metadata: dict[str, MetadataValue] | None = Field(default=None, max_length=64)

    @field_validator("methods", "budgets")
    @classmethod
    def _each_once(cls, values: list) -> list:
        return _unique(values)

    def shared_settings(self) -> dict[str, Any]:
        """The settings as given (a key set to null included), which is what the comparison stores."""
        return self.settings.model_dump(exclude_unset=True) if self.settings is not None else {}


class RunCounts(BaseModel):
    total: int
    queued: int  # validating_files or queued
    running: int
    succeeded: int
    failed: int
    cancelled: int


class ComparisonRun(BaseModel):
    job_id: str
    method: str
    budget: float
    seed: int
    status: str
    eval_loss: float | None = Field(description="The job's last evaluation (held-out answer loss).")
    eval_accuracy: float | None = Field(description="Exact match of the job's last evaluation, a fraction.")
    seconds: float | None = Field(description="Scoring + training time, once the job has succeeded.")


class ComparisonPublic(BaseModel):
    id: str
    object: Literal["comparison"] = "comparison"
    name: str | None
    status: ComparisonStatus
    dataset_id: str
    eval_dataset_id: str
    model: str
    methods: list[str]
    budgets: list[float]
    seeds: int
    include_full: bool
    label_field: str | None
    settings: dict[str, Any]
    metadata: dict[str, Any] | None
    created_at: dt.datetime
    finished_at: dt.datetime | None = Field(description="When the last job finished; null until all have.")
    counts: RunCounts
    runs: list[ComparisonRun] = Field(description="Ordered by seed, then method and budget as requested (full last).")


class ComparisonDeleted(BaseModel):
    id: str
    object: Literal["comparison"] = "comparison"
    deleted: bool = True


# ---- the report ----------------------------------------------------------------------------------------------


class MetricInfo(BaseModel):
    key: str
    name: str
    lower_is_better: bool
    scale: float = Field(description="Multiply values by this for display (100: a fraction shown in points).")
    unit: str = Field(description="Of the scaled value.")


class MeanSD(BaseModel):
    mean: float
    sd: float  # sample standard deviation over seeds (0 for one run)


class ReportRow(BaseModel):
    method: str
    budget: float
    n: int = Field(description="Succeeded runs in this row.")
    eval_loss: MeanSD | None
    eval_accuracy: MeanSD | None
    seconds: MeanSD | None
    time_vs_full: float | None = Field(description="Mean seconds over full's mean seconds (null without full).")
    scoring_share: float | None = Field(description="Share of the time spent scoring candidates.")


class Difference(BaseModel):
    method: str
    budget: float
    reference: str
    reference_budget: float
    metric: str = Field(description="A key of `metrics`.")
    mean: float = Field(description="Mean over paired seeds of (method - reference), unscaled.")
    low: float | None = Field(description="95% t-interval; null when n is 1 (one pair says nothing of the spread).")
    high: float | None
    n: int = Field(description="Paired seeds.")
    verdict: Literal["better", "worse", "indistinguishable"]
    sentence: str


class LabelRow(BaseModel):
    method: str
    budget: float
    picked: int = Field(description="Examples trained on, pooled over the succeeded runs (with repeats).")
    shares: dict[str, float]


class LabelShares(BaseModel):
    field: str
    labels: list[str]
    training: dict[str, float] = Field(description="Each label's share of the labelled training rows.")
    rows: list[LabelRow]


class ComparisonReport(BaseModel):
    comparison_id: str
    complete: bool = Field(description="Every job has finished (succeeded, failed or cancelled).")
    runs_done: int = Field(description="Jobs finished, whatever their outcome.")
    runs_total: int
    primary_metric: str
    metrics: list[MetricInfo]
    rows: list[ReportRow]
    differences: list[Difference]
    sentences: list[str]
    labels: LabelShares | None
    notes: list[str]

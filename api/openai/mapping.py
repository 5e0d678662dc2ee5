"""Translation between the OpenAI shapes and the native ones. The decisions (validation, resolution, queueing)
stay in api/services and uds.config; this module only renames.

Hyperparameters (each "auto" or a number; `method.supervised.hyperparameters`, or the legacy top-level
`hyperparameters`):
- `n_epochs` -> `epochs`; "auto" = the UDS `epochs` extra field if given, else TrainConfig's default (1).
- `batch_size` -> `train_batch_size`: the examples whose gradient makes one optimizer step, as in OpenAI's API.
  A step is `groups_per_step` selection groups of `candidate_batch_size` B candidates, k = max(1, round(budget
  * B)) picked from each, so it trains on about `batch_size` selected examples out of about batch_size / budget
  candidates; with `selection_method: "full"` (budget 1) an epoch is ceil(N / batch_size) steps, as with OpenAI.
  Two exceptions: a dataset too small for 4 steps an epoch gets fewer groups a step (uds.config.groups_per_step),
  and an explicit `groups_per_step` fixes the step instead (so it may not be given with a numeric batch_size).
  The micro batch is a memory setting (gradient accumulation), not a batch size in this sense.
  "auto" = `train_batch_size` or 32; the echo is the step's nominal selected count (groups_per_step * k when set).
- `learning_rate_multiplier` x BASE_LEARNING_RATE (TrainConfig's default, 1.5e-4, the paper's) = `learning_rate`;
  "auto" = 1, or the `learning_rate` extra field divided by the base.
A number given both ways (e.g. `n_epochs: 2` and `epochs: 3`) is refused rather than silently picked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from pydantic import ValidationError

from api.errors import APIError
from api.models import Job
from api.openai.schemas import (
    FineTuningJob,
    FineTuningJobCreate,
    Hyperparameters,
    JobError,
    Method,
    SupervisedMethod,
)
from api.schemas import JobCreate, job_public
from uds.config import TrainConfig, selected_count

BASE_LEARNING_RATE: float = TrainConfig.learning_rate  # the class attribute is the field's default
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# Where a native field comes from in an OpenAI request, for error messages (`param`).
BASE_SOURCES = {"dataset_id": "training_file", "eval_dataset_id": "validation_file", "method": "selection_method"}
# OpenAI name -> TrainConfig name.
HYPERPARAMETERS = {"n_epochs": "epochs", "batch_size": "train_batch_size", "learning_rate_multiplier": "learning_rate"}
# A UDS setting that overrides what a hyperparameter sets: given together, one would be silently ignored.
OVERRIDDEN_BY = {"train_batch_size": "groups_per_step"}
# Native request fields that have an OpenAI name on /v1; sending the native name there is a mistake.
RENAMED = {"dataset_id": "training_file", "eval_dataset_id": "validation_file"}
# TrainConfig fields that are not UDS settings in the echo (they are OpenAI fields of their own).
NOT_ECHOED = ("model", "seed")


def unix(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _hyperparameters(body: FineTuningJobCreate) -> dict[str, tuple[Any, str]]:
    """name -> (value, where it was given); method.supervised wins over the legacy field, unless they disagree."""
    given: dict[str, tuple[Any, str]] = {}
    if body.hyperparameters is not None:
        for name, value in body.hyperparameters.model_dump(exclude_none=True).items():
            given[name] = (value, f"hyperparameters.{name}")
    if body.method is not None:
        if body.method.type != "supervised":
            raise APIError(
                400,
                f"method.type {body.method.type!r} is not supported here; this service trains "
                'LoRA adapters with supervised fine-tuning only (method.type "supervised").',
                code="unsupported_method",
                param="method.type",
            )
        if body.method.dpo is not None or body.method.reinforcement is not None:
            raise APIError(
                400,
                'method: only the `supervised` configuration may be given with type "supervised".',
                code="invalid_value",
                param="method",
            )
        hyper = body.method.supervised.hyperparameters if body.method.supervised else None
        for name, value in (hyper.model_dump(exclude_none=True) if hyper else {}).items():
            source = f"method.supervised.hyperparameters.{name}"
            if name in given and given[name][0] != value:
                raise APIError(
                    400,
                    f"{source} ({value!r}) disagrees with {given[name][1]} ({given[name][0]!r}); "
                    "give it once (hyperparameters is the deprecated place).",
                    code="invalid_value",
                    param=source,
                )
            given[name] = (value, source)
    return given


def to_native(body: FineTuningJobCreate) -> tuple[JobCreate, dict[str, str]]:
    """The native request for `body`, and native field -> request parameter (to name it in errors)."""
    if body.integrations:
        raise APIError(
            400,
            "integrations are not supported by this service; follow the job's metrics events instead.",
            code="unsupported_parameter",
            param="integrations",
        )
    extras = dict(body.model_extra or {})
    for native, openai_name in RENAMED.items():
        if native in extras:
            raise APIError(
                400, f"{native}: unknown parameter on /v1; use {openai_name}.", code="unknown_parameter", param=native
            )
    sources = dict(BASE_SOURCES)
    for name, (value, source) in _hyperparameters(body).items():
        if value == "auto":
            continue
        field = HYPERPARAMETERS[name]
        native_value = value * BASE_LEARNING_RATE if name == "learning_rate_multiplier" else value
        if field in extras:
            same = (
                math.isclose(extras[field], native_value, rel_tol=1e-9)
                if isinstance(extras[field], (int, float)) and not isinstance(extras[field], bool)
                else extras[field] == native_value
            )
            if not same:
                raise APIError(
                    400,
                    f"{source} ({value!r}) disagrees with {field} ({extras[field]!r}); give one of them.",
                    code="invalid_value",
                    param=source,
                )
        if OVERRIDDEN_BY.get(field) in extras and extras[OVERRIDDEN_BY[field]] is not None:
            raise APIError(
                400,
                f"{source} ({value!r}) and {OVERRIDDEN_BY[field]} both size the optimizer step; give one of them.",
                code="invalid_value",
                param=source,
            )
        extras[field] = native_value
        sources[field] = source
    request: dict[str, Any] = {"dataset_id": body.training_file, "model": body.model, **extras}
    if "selection_method" in extras:
        request["method"] = request.pop("selection_method")
    for name in ("validation_file", "suffix", "metadata", "seed"):
        value = getattr(body, name)
        if value is not None:
            request["eval_dataset_id" if name == "validation_file" else name] = value
    try:
        return JobCreate.model_validate(request), sources
    except ValidationError as exc:
        error = exc.errors()[0]
        failed = str(error["loc"][0]) if error.get("loc") else None
        param = sources.get(failed, failed) if failed else None
        if error.get("type") == "extra_forbidden":
            raise APIError(
                400,
                f"{param}: unknown parameter. UDS settings that may be sent next to the OpenAI fields: "
                f"selection_method, {', '.join(sorted(uds_setting_names()))}.",
                code="unknown_parameter",
                param=param,
            ) from None
        raise APIError(
            400, f"{param}: {error.get('msg', 'invalid value')}", code="invalid_value", param=param
        ) from None


def uds_setting_names() -> set[str]:
    return set(JobCreate.model_fields) - {
        "dataset_id",
        "eval_dataset_id",
        "model",
        "method",
        "seed",
        "suffix",
        "metadata",
    }


def remap_error(exc: APIError, sources: dict[str, str]) -> APIError:
    """A native error as the /v1 request would name it: params renamed, and a missing training or validation file
    a 400 (the request is wrong; nothing at this URL is missing)."""
    param = sources.get(exc.param, exc.param) if exc.param else exc.param
    message = exc.message
    if exc.param and param != exc.param and exc.detail is not None:
        # A hyperparameter's value is checked as the setting it becomes: say which, or the number shown is a puzzle.
        renamed = f"{param} (as {exc.param})" if exc.param in HYPERPARAMETERS.values() else param
        message = f"{renamed}: {exc.detail}"
    if exc.status_code == 404 and exc.param in ("dataset_id", "eval_dataset_id"):
        return APIError(400, f"{param}: {message.replace('dataset', 'file')}", code="file_not_found", param=param)
    return APIError(exc.status_code, message, exc.code, param, exc.problems, exc.headers)


def hyperparameters(config: dict[str, Any]) -> Hyperparameters:
    def get(name: str):
        return config.get(name, _DEFAULTS[name])

    multiplier = get("learning_rate") / BASE_LEARNING_RATE
    batch_size = get("train_batch_size")
    if config.get("groups_per_step") is not None:  # it fixes the step, whatever train_batch_size says
        batch_size = config["groups_per_step"] * selected_count(get("budget"), get("candidate_batch_size"))
    return Hyperparameters(
        n_epochs=get("epochs"), batch_size=batch_size, learning_rate_multiplier=float(f"{multiplier:.10g}")
    )


def uds_settings(job: Job) -> dict[str, Any]:
    """The job's resolved configuration under the names the request uses (`method` is `selection_method`)."""
    settings = {("selection_method" if k == "method" else k): v for k, v in job.config.items() if k not in NOT_ECHOED}
    settings["name"] = job.name
    return settings


def job_object(job: Job, organization: str, result_files: list[str], now: dt.datetime) -> FineTuningJob:
    native = job_public(job, now)
    error = None
    if job.status == "failed":
        param = BASE_SOURCES.get(job.error_param, job.error_param) if job.error_param else None
        error = JobError(code=job.error_code or "failed", message=job.error_message or "The job failed.", param=param)
    hyper = hyperparameters(job.config)
    estimated_finish = None
    if native.eta_seconds is not None:
        estimated_finish = int(now.timestamp() + native.eta_seconds)
    progress = {
        "step": native.progress.step,
        "total_steps": native.progress.total_steps,
        "epoch": native.progress.epoch,
        "fraction": native.progress.fraction,
        "examples_scored": native.examples_scored,
        "examples_trained": native.examples_trained,
        "tokens_trained": native.tokens_trained,
        "backward_saved_fraction": native.backward_saved_fraction,
        "alpha_used": native.alpha_used,
        "latest_loss": native.latest_loss,
    }
    return FineTuningJob(
        id=job.id,
        created_at=unix(job.created_at),
        error=error,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=unix(job.finished_at),
        hyperparameters=hyper,
        model=job.model,
        organization_id=organization,
        result_files=result_files,
        seed=job.seed,
        status=job.status,
        trained_tokens=job.tokens_trained if job.finished_at is not None else None,
        training_file=job.dataset_id,
        validation_file=job.eval_dataset_id,
        estimated_finish=estimated_finish,
        integrations=[],
        metadata=job.metadata_,
        method=Method(supervised=SupervisedMethod(hyperparameters=hyper)),
        suffix=job.suffix,
        user_provided_suffix=job.suffix,
        **uds_settings(job),
        progress=progress,
    )

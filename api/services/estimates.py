"""POST /api/v1/jobs/estimate: what a job would cost, computed by uds/estimate.py from the same checked request a
job is created from, the dataset's rows counted with the model's tokenizer files (torch-free), the model's
config.json, and the speed this deployment's succeeded jobs measured.

Rates are deployment-wide: another tenant's finished job of the same model and method calibrates the estimate (a
speed is not data), but nothing of it but the rates and their count is returned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.models import Dataset, Job, Tenant
from api.schemas import JobCreate
from api.services.jobs import check_job
from api.settings import Settings
from uds.estimate import (
    BYTES_PER_SUBWORD_TOKEN,
    ModelShape,
    TokenCounter,
    estimate,
    kind_devices,
    row_lengths,
    tiny_counter,
    tiny_shape,
)
from uds.formats import DatasetError, load_examples
from uds.tiny import TINY_MODEL

# The newest measurements a time estimate is the median of: recent enough to follow a hardware change.
RATE_WINDOW = 50
_CACHED_DATASETS = 16


def job_estimate(session: Session, tenant: Tenant, settings: Settings, body: JobCreate) -> dict[str, Any]:
    checked = check_job(session, tenant, settings, body)
    session.rollback()  # the checks' row lock on the dataset; nothing was written
    config, model = checked.config, checked.model
    folder = model.folder if model.folder is not None and (model.folder / "config.json").is_file() else None
    if folder is not None:
        counter = TokenCounter.from_folder(folder)
        shape, memory_note = _shape(folder, model.facts.parameters)
    elif model.name == TINY_MODEL:
        counter, shape, memory_note = tiny_counter(), tiny_shape(), None
    else:
        counter, shape = TokenCounter(None, (), None, None, BYTES_PER_SUBWORD_TOKEN), None
        memory_note = "the model's config.json is not on this server yet (it is made when a worker first uses it)"
    lengths = [min(config.max_seq_len, n) for n in _row_tokens(settings, checked.dataset, counter)]
    kind, rates = deployment_rates(session, config.model, config.method, config.devices)
    result = estimate(config, lengths, shape, rates, tokens_counted_exactly=counter.exact)
    result["time"]["device_kind"] = kind
    return {
        "object": "job.estimate",
        "model": config.model,
        "method": config.method,
        "dataset_id": checked.dataset.id,
        **result,
        "tokens_counted": "exact" if counter.exact else f"approximate ({counter.bytes_per_token:g} bytes a token)",
        "memory_note": memory_note,
    }


def deployment_rates(
    session: Session, model: str, method: str, devices: int = 1
) -> tuple[str | None, list[tuple[float, float]]]:
    """(device kind, [(scoring rate, training rate)]) of the newest succeeded jobs of this model and method on
    `devices` devices, all on the device kind of the newest of them (where this deployment's jobs run now)."""
    measured = (
        select(Job.device_kind, Job.scoring_rate, Job.training_rate)
        .where(
            Job.status == "succeeded",
            Job.model == model,
            Job.method == method,
            Job.scoring_rate.is_not(None),
            Job.training_rate.is_not(None),
        )
        .order_by(Job.finished_at.desc(), Job.id)
    )
    # The device count is the kind's suffix (uds.device.device_kind): a job on another count measured another speed.
    newest = next(
        (row for row in session.execute(measured.limit(RATE_WINDOW * 10)) if kind_devices(row[0]) == devices), None
    )
    if newest is None:
        return None, []
    kind = newest[0]
    same_kind = measured.where(Job.device_kind.is_(None) if kind is None else Job.device_kind == kind)
    rows = session.execute(same_kind.limit(RATE_WINDOW)).all()
    return kind, [(scoring, training) for _, scoring, training in rows if scoring and training]


def _shape(folder: Path, parameters: int | None) -> tuple[ModelShape | None, str | None]:
    try:
        return ModelShape.from_folder(folder, parameters), None
    except (KeyError, TypeError, ValueError):
        return None, "the model's config.json lacks the sizes this estimate needs"


def _row_tokens(settings: Settings, dataset: Dataset, counter: TokenCounter) -> list[int]:
    """Each row's token count before truncation, kept for the last few datasets: a form asks again at each
    keystroke, and a stored dataset never changes (its sha256 is in the key all the same)."""
    key = (dataset.id, dataset.sha256, counter)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        examples = load_examples(settings.resolve(dataset.storage_path))
    except (DatasetError, OSError, ValueError) as exc:
        raise APIError(
            409, f"Dataset {dataset.id} cannot be read: {exc}", code="dataset_unreadable", param="dataset_id"
        ) from None
    lengths = row_lengths(counter, examples, max_seq_len=2**31)
    with _lock:
        _cache[key] = lengths
        while len(_cache) > _CACHED_DATASETS:
            _cache.popitem(last=False)
    return lengths


_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, TokenCounter], list[int]] = OrderedDict()
__all__ = ["job_estimate", "deployment_rates"]

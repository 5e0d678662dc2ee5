"""A succeeded job's result files (purpose `fine-tune-results`): `step_metrics.csv`, one row per optimizer step,
and the adapter archive (the PEFT folder as .tar.gz, the same file the native API serves).

They are recorded the first time the /v1 API shows the succeeded job (or lists files), not by the worker: the
worker knows nothing of this API, and everything the CSV holds is final once the job has succeeded. Ids are
derived from (job id, kind), so two requests recording at once collide on the primary key instead of
creating two files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.models import Job, ResultFile, StepMetric
from api.settings import Settings

PURPOSE = "fine-tune-results"
KINDS = ("step_metrics", "adapter")
CSV_NAME = "step_metrics.csv"

STAT_GROUPS = ("candidates", "selected")
STAT_SCORES = ("utility", "diversity", "score")
STAT_NAMES = ("mean", "std", "min", "max")
# The step's length-bias diagnostic (stats["length"], uds/diagnostics.py): means over its selection groups.
LENGTH_NAMES = ("spearman_utility_length", "spearman_score_length", "mean_length_candidates", "mean_length_selected")
CSV_COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "full_valid_loss",
    "valid_exact_match",
    "learning_rate",
    "grad_norm",
    "tokens_trained",
    "candidates",
    "selected",
    "alpha",
    "time_scoring",
    "time_training",
    *(f"{g}_{s}_{n}" for g in STAT_GROUPS for s in STAT_SCORES for n in STAT_NAMES),
    "groups",
    *LENGTH_NAMES,  # last, so the columns before keep their places
)


def result_file_id(job_id: str, kind: str) -> str:
    return "file-" + hashlib.sha256(f"{job_id}:{kind}".encode()).hexdigest()[:24]


def metrics_record(m: StepMetric, total_steps: int | None) -> dict[str, Any]:
    """One step under the OpenAI metric names, plus the UDS figures. Eval figures only where evaluated: the eval
    runs on the whole validation file, so `valid_loss` and `full_valid_loss` are the same number; the trainer
    measures greedy exact match there (`valid_exact_match`), not token accuracy."""
    record: dict[str, Any] = {
        "step": m.step,
        "total_steps": total_steps,
        "train_loss": m.loss,
        "train_mean_token_accuracy": m.token_accuracy,
    }
    if m.eval_loss is not None:
        record.update(valid_loss=m.eval_loss, full_valid_loss=m.eval_loss)
    if m.eval_accuracy is not None:
        record["valid_exact_match"] = m.eval_accuracy
    record.update(
        epoch=m.epoch,
        learning_rate=m.learning_rate,
        grad_norm=m.grad_norm,
        tokens_trained=m.tokens_trained,
        candidates=m.candidates,
        selected=m.selected,
        alpha=m.alpha,
        time_scoring=m.time_scoring,
        time_training=m.time_training,
        selection_stats=m.stats,
    )
    return record


def _csv_row(m: StepMetric) -> list[Any]:
    row = [
        m.step,
        m.epoch,
        m.loss,
        m.token_accuracy,
        m.eval_loss,
        m.eval_loss,
        m.eval_accuracy,
        m.learning_rate,
        m.grad_norm,
        m.tokens_trained,
        m.candidates,
        m.selected,
        m.alpha,
        m.time_scoring,
        m.time_training,
    ]
    stats = m.stats or {}
    for group in STAT_GROUPS:
        for score in STAT_SCORES:
            summary = (stats.get(group) or {}).get(score) or {}
            row += [summary.get(name) for name in STAT_NAMES]
    length = stats.get("length") or {}
    row += [stats.get("groups"), *(length.get(name) for name in LENGTH_NAMES)]
    return ["" if v is None else v for v in row]


def step_metrics_csv(session: Session, job_id: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in session.scalars(select(StepMetric).where(StepMetric.job_id == job_id).order_by(StepMetric.step)):
        writer.writerow(_csv_row(m))
    return out.getvalue().encode()


def _write_atomically(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(6)}")
    temp.write_bytes(data)
    os.replace(temp, path)


def _new_rows(session: Session, settings: Settings, job: Job) -> list[ResultFile]:
    data = step_metrics_csv(session, job.id)
    relative = os.path.relpath(settings.job_dir(job.id) / CSV_NAME, settings.data_dir)
    _write_atomically(settings.resolve(relative), data)
    rows = [_row(job, "step_metrics", f"{job.id}-{CSV_NAME}", len(data), relative)]
    if job.adapter_path:
        rows.append(_row(job, "adapter", f"{job.id}-adapter.tar.gz", job.adapter_bytes or 0, job.adapter_path))
    return rows


def _row(job: Job, kind: str, filename: str, size: int, storage_path: str) -> ResultFile:
    return ResultFile(
        id=result_file_id(job.id, kind),
        tenant_id=job.tenant_id,
        job_id=job.id,
        kind=kind,
        filename=filename,
        bytes=size,
        storage_path=storage_path,
        created_at=job.finished_at,
    )


def result_files(session: Session, settings: Settings, jobs: list[Job]) -> dict[str, list[str]]:
    """job id -> its result file ids (CSV first), recording them for succeeded jobs that have none yet."""
    ids = [j.id for j in jobs if j.status == "succeeded"]
    found: dict[str, list[ResultFile]] = {i: [] for i in ids}
    if ids:
        for row in session.scalars(select(ResultFile).where(ResultFile.job_id.in_(ids))):
            found[row.job_id].append(row)
    missing = [j for j in jobs if j.id in found and not found[j.id]]
    if missing:
        for job in missing:
            rows = _new_rows(session, settings, job)
            try:
                with session.begin_nested():
                    session.add_all(rows)
            except IntegrityError:
                # Another request recorded them a moment ago (same ids, same content).
                rows = list(session.scalars(select(ResultFile).where(ResultFile.job_id == job.id)))
            found[job.id] = rows
        session.commit()
    return {job_id: [r.id for r in sorted(rows, key=lambda r: KINDS.index(r.kind))] for job_id, rows in found.items()}


def record_all(session: Session, settings: Settings, tenant_id: int) -> None:
    """Record the result files of every succeeded job of the tenant that has none (before listing files)."""
    jobs = list(
        session.scalars(
            select(Job).where(
                Job.tenant_id == tenant_id, Job.status == "succeeded", ~exists().where(ResultFile.job_id == Job.id)
            )
        )
    )
    if jobs:
        result_files(session, settings, jobs)

"""Comparisons ("compare methods"): creation of the group of jobs (all or none), their status, cancel and delete.
The report is api/services/comparison_report.py.

A comparison trains every selector at every budget, plus full, once per seed 0..seeds-1. A seed fixes the candidate
order and the LoRA init for every method (uds.trainer), so the runs of one seed are paired and the report judges
each method by the per-seed differences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api import previews
from api.dispatch import Dispatcher
from api.errors import APIError, param_error
from api.ids import new_comparison_id
from api.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Comparison,
    Dataset,
    Job,
    JobTask,
    StepMetric,
    Tenant,
    utcnow,
)
from api.schemas import JobCreate
from api.schemas.comparisons import (
    SHARED_SETTINGS,
    ComparisonCreate,
    ComparisonPublic,
    ComparisonRun,
    ComparisonStatus,
    RunCounts,
)
from api.services import jobs as job_service
from api.settings import Settings
from api.validation import check_values
from uds.comparison import (
    EXACT_MATCH,
    FULL,
    HELD_OUT_LOSS,
    Metric,
)

# What jobs' evaluations measure: the loss of the held-out answers and exact match of the greedy answers.
METRICS: tuple[Metric, ...] = (HELD_OUT_LOSS, EXACT_MATCH)
PRIMARY = HELD_OUT_LOSS
JOB_NAME_CHARS = 256  # jobs.name
# Job fields that are the comparison's per-run choices: an error about one of them names the comparison's field.
PER_RUN_FIELDS = {"method": "methods", "budget": "budgets", "seed": "seeds"}


# ---- creation ----------------------------------------------------------------------------------------------------


def run_plan(methods: Sequence[str], budgets: Sequence[float], include_full: bool) -> list[tuple[str, float]]:
    """(method, budget) of one seed's runs, in the order they are created: each selector at each budget, then full."""
    plan = [(method, budget) for method in methods for budget in budgets]
    return plan + [(FULL, 1.0)] if include_full else plan


def check_size(body: ComparisonCreate, settings: Settings) -> int:
    """The number of jobs the comparison makes, or 400 `comparison_too_large` over UDS_MAX_COMPARISON_JOBS."""
    per_seed = len(run_plan(body.methods, body.budgets, body.include_full))
    count = body.seeds * per_seed
    if count > settings.max_comparison_jobs:
        raise APIError(
            400,
            f"This comparison would make {count} jobs ({body.seeds} seeds x {per_seed} runs per seed), more than "
            f"the {settings.max_comparison_jobs} allowed (UDS_MAX_COMPARISON_JOBS); use fewer seeds, methods or "
            "budgets.",
            code="comparison_too_large",
            param="seeds",
        )
    return count


def job_name(label: str, method: str, budget: float, seed: int) -> str:
    """A run's job name, `<comparison name or id>: <method> <budget as %> seed <s>`, the label cut to fit the column."""
    run = f": {method} {budget * 100:g}% seed {seed}"
    return label[: JOB_NAME_CHARS - len(run)] + run


def check_label_field(session: Session, settings: Settings, tenant: Tenant, body: ComparisonCreate) -> None:
    """400 (param `label_field`) unless some row of the training file has the key as a string. A dataset that is
    missing or not the tenant's is left to the jobs' own check, which answers it as POST /jobs does."""
    if body.label_field is None:
        return
    dataset = session.scalar(select(Dataset).where(Dataset.id == body.dataset_id, Dataset.tenant_id == tenant.id))
    path = settings.served_file(dataset.storage_path) if dataset is not None else None
    if path is None:
        return
    if not any(label is not None for label in previews.row_labels(path, body.label_field)):
        raise param_error(
            "label_field",
            f"no row of dataset {body.dataset_id} has the key {body.label_field!r} with a string value "
            f'(e.g. {{"{body.label_field}": "code", "messages": [...]}}); give a key the rows carry, or leave it out.',
        )


def _job_request(comparison: Comparison, method: str, budget: float, seed: int) -> JobCreate:
    """One run as the POST /jobs body it amounts to, validated by the same model."""
    return JobCreate.model_validate(
        {
            **comparison.settings,
            "dataset_id": comparison.dataset_id,
            "eval_dataset_id": comparison.eval_dataset_id,
            "model": comparison.model,
            "name": job_name(comparison.name or comparison.id, method, budget, seed),
            "method": method,
            "budget": budget,
            "seed": seed,
        }
    )


def _as_comparison_error(exc: APIError, method: str, budget: float, seed: int) -> APIError:
    """A job's error with its param as the comparison names it: `settings.<key>` for a shared setting, the
    comparison's field for a per-run one (with the run it is about); the rest (datasets, model) unchanged."""
    param = exc.param or ""
    head = param.split(".")[0]
    if head in SHARED_SETTINGS:
        new_param, where = f"settings.{param}", ""
    elif head in PER_RUN_FIELDS:
        new_param, where = PER_RUN_FIELDS[head], f" (the run of {method} at budget {budget:g}, seed {seed})"
    else:
        return exc
    if exc.detail is not None:
        message = f"{new_param}: {exc.detail}{where}"
    elif exc.message.startswith(f"{param}:"):
        message = new_param + exc.message[len(param) :] + where
    else:
        message = exc.message + where
    return APIError(exc.status_code, message, exc.code, new_param, exc.problems, exc.headers, exc.detail)


def _add_jobs(session: Session, tenant: Tenant, settings: Settings, comparison: Comparison) -> list[Job]:
    """Every run's job, seed by seed, validated as POST /jobs validates one, added without committing."""
    jobs = []
    for seed in range(comparison.seeds):
        for method, budget in run_plan(comparison.methods, comparison.budgets, comparison.include_full):
            try:
                request = _job_request(comparison, method, budget, seed)
                jobs.append(job_service.add_job(session, tenant, settings, request, comparison_id=comparison.id))
            except APIError as exc:
                raise _as_comparison_error(exc, method, budget, seed) from None
    return jobs


def create_comparison(
    session: Session,
    tenant: Tenant,
    settings: Settings,
    dispatcher: Dispatcher,
    body: ComparisonCreate,
    charge: Callable[[int], None] | None = None,
) -> Comparison:
    """Validate and store the comparison and all its jobs in one transaction (any error leaves nothing behind),
    then dispatch the jobs seed by seed, so seed 0's runs are trained first. `charge(jobs)` runs once all is valid,
    before the commit: the rate limit's price of the jobs (it raises a 429 APIError, and nothing is stored)."""
    count = check_size(body, settings)
    # Unstorable text or numbers (NUL, lone surrogates, NaN) before anything reaches a query or a JSON column.
    for name, value in body.model_dump(exclude_unset=True).items():
        check_values(value, name)
    check_label_field(session, settings, tenant, body)
    comparison = Comparison(
        id=new_comparison_id(),
        tenant_id=tenant.id,
        name=body.name,
        dataset_id=body.dataset_id,
        eval_dataset_id=body.eval_dataset_id,
        model=body.model,
        methods=list(body.methods),
        budgets=list(body.budgets),
        seeds=body.seeds,
        include_full=body.include_full,
        label_field=body.label_field,
        settings=body.shared_settings(),
        metadata_=body.metadata,
        created_at=utcnow(),
    )
    session.add(comparison)
    try:
        jobs = _add_jobs(session, tenant, settings, comparison)
        job_service.check_active_jobs(session, tenant, settings, adding=count)
        if charge is not None:
            charge(count)
    except APIError:
        session.rollback()
        raise
    session.commit()
    for job in jobs:
        job_service.dispatch_job(session, dispatcher, job)
    return comparison


# ---- reading: the jobs and what they measured ----------------------------------------------------------------------


@dataclass
class Run:
    """One job of a comparison with what the report needs of it."""

    job: Job
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    time_scoring: float | None = None
    time_training: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.time_scoring is None or self.time_training is None:
            return None
        return self.time_scoring + self.time_training

    def as_dict(self) -> dict[str, Any]:
        """The run as uds.comparison takes it."""
        return {
            "method": self.job.method,
            "budget": self.job.budget,
            "seed": self.job.seed,
            "eval_loss": self.eval_loss,
            "eval_accuracy": self.eval_accuracy,
            "time_scoring": self.time_scoring,
            "time_training": self.time_training,
        }


def _final_evaluations(session: Session, job_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
    """Per job, (eval_loss, eval_accuracy) of its last step metric that has an eval_loss."""
    rows = session.execute(
        select(StepMetric.job_id, StepMetric.eval_loss, StepMetric.eval_accuracy)
        .where(StepMetric.job_id.in_(job_ids), StepMetric.eval_loss.is_not(None))
        .order_by(StepMetric.job_id, StepMetric.step)
    )
    return {job_id: (loss, accuracy) for job_id, loss, accuracy in rows}  # the last step of each job wins


def _plan_position(comparison: Comparison) -> dict[tuple[str, float], int]:
    plan = run_plan(comparison.methods, comparison.budgets, comparison.include_full)
    return {(method, round(budget, 9)): i for i, (method, budget) in enumerate(plan)}


def load_runs(session: Session, comparisons: list[Comparison]) -> dict[str, list[Run]]:
    """The runs of each comparison (three queries for all of them), ordered by seed, then as planned."""
    ids = [c.id for c in comparisons]
    jobs = list(session.scalars(select(Job).where(Job.comparison_id.in_(ids)))) if ids else []
    job_ids = [j.id for j in jobs]
    evaluations = _final_evaluations(session, job_ids) if job_ids else {}
    runs: dict[str, list[Run]] = {c.id: [] for c in comparisons}
    for job in jobs:
        loss, accuracy = evaluations.get(job.id, (None, None))
        succeeded = job.status == "succeeded"
        scoring, training = (job.time_scoring, job.time_training) if succeeded else (None, None)
        runs[str(job.comparison_id)].append(Run(job, loss, accuracy, scoring, training))
    for comparison in comparisons:
        position = _plan_position(comparison)
        runs[comparison.id].sort(
            key=lambda r: (r.job.seed, position.get((r.job.method, round(r.job.budget, 9)), len(position)), r.job.id)
        )
    return runs


def runs_state(session: Session, comparison: Comparison) -> list[tuple[Any, ...]]:
    """What of its runs a comparison's view and report are made of and can change: status, times, and progress
    (progress_at moves with every metrics write, so a new evaluation changes it too). Read before the views'
    three queries, to answer an unchanged poll with none of them."""
    rows = session.execute(
        select(
            Job.id,
            Job.status,
            Job.started_at,
            Job.finished_at,
            Job.progress_at,
            Job.current_step,
            Job.time_scoring,
            Job.time_training,
        )
        .where(Job.comparison_id == comparison.id)
        .order_by(Job.id)
    )
    return [tuple(row) for row in rows]


def run_counts(runs: list[Run]) -> RunCounts:
    statuses = Counter(run.job.status for run in runs)
    return RunCounts(
        total=len(runs),
        queued=statuses["validating_files"] + statuses["queued"],
        running=statuses["running"],
        succeeded=statuses["succeeded"],
        failed=statuses["failed"],
        cancelled=statuses["cancelled"],
    )


def comparison_status(counts: RunCounts, any_started: bool) -> ComparisonStatus:
    """queued: some unfinished, none started yet (some may have been cancelled before they started); running: some
    unfinished; then failed > cancelled > succeeded once all have finished."""
    if counts.queued or counts.running:
        return "running" if counts.running or any_started else "queued"
    if counts.failed:
        return "failed"
    return "cancelled" if counts.cancelled else "succeeded"


def comparison_public(comparison: Comparison, runs: list[Run]) -> ComparisonPublic:
    counts = run_counts(runs)
    finished = [r.job.finished_at for r in runs if r.job.finished_at is not None]
    all_finished = counts.queued == 0 and counts.running == 0
    return ComparisonPublic(
        id=comparison.id,
        name=comparison.name,
        status=comparison_status(counts, any(r.job.started_at is not None for r in runs)),
        dataset_id=comparison.dataset_id,
        eval_dataset_id=comparison.eval_dataset_id,
        model=comparison.model,
        methods=comparison.methods,
        budgets=comparison.budgets,
        seeds=comparison.seeds,
        include_full=comparison.include_full,
        label_field=comparison.label_field,
        settings=comparison.settings,
        metadata=comparison.metadata_,
        created_at=comparison.created_at,
        finished_at=max(finished) if all_finished and finished else None,
        counts=counts,
        runs=[
            ComparisonRun(
                job_id=r.job.id,
                method=r.job.method,
                budget=r.job.budget,
                seed=r.job.seed,
                status=r.job.status,
                eval_loss=r.eval_loss,
                eval_accuracy=r.eval_accuracy,
                seconds=r.seconds,
            )
            for r in runs
        ],
    )


def comparison_views(session: Session, comparisons: list[Comparison]) -> list[ComparisonPublic]:
    runs = load_runs(session, comparisons)
    return [comparison_public(c, runs[c.id]) for c in comparisons]


# ---- cancel and delete ---------------------------------------------------------------------------------------------


def cancel_comparison(session: Session, comparison: Comparison) -> None:
    """Every unfinished job cancelled as POST /jobs/{id}/cancel does: the queued ones first, so a worker does not
    start one of them as a running one stops. Idempotent: finished jobs (all of them, even) are left as they are."""
    jobs = [r.job for r in load_runs(session, [comparison])[comparison.id] if r.job.status in ACTIVE_STATUSES]
    for job in sorted(jobs, key=lambda j: j.status == "running"):
        try:
            job_service.cancel_job(session, job)
        except APIError as exc:
            if exc.code != "job_not_cancellable":  # it finished meanwhile: nothing left to cancel
                raise


def delete_comparison(session: Session, settings: Settings, comparison: Comparison) -> None:
    """Its jobs (as DELETE /jobs/{id} deletes each) and the comparison. 409 `comparison_not_finished` while one of
    its jobs is unfinished, 409 `job_in_use` (naming the job) while an export or try-it of one is. The jobs go
    first, one by one: if one cannot be deleted, the comparison stays, and the DELETE can be repeated."""
    jobs = [r.job for r in load_runs(session, [comparison])[comparison.id]]
    unfinished = [j for j in jobs if j.status not in FINISHED_STATUSES]
    if unfinished:
        raise APIError(
            409,
            f"Comparison {comparison.id} has {len(unfinished)} unfinished job(s) (e.g. {unfinished[0].id}, "
            f"{unfinished[0].status}); cancel it (POST /api/v1/comparisons/{comparison.id}/cancel) and wait for them "
            "to stop, or wait for them to finish.",
            code="comparison_not_finished",
            param="id",
        )
    comparison_id, job_ids = comparison.id, [j.id for j in jobs]
    busy = session.scalar(
        select(JobTask.job_id).where(JobTask.job_id.in_(job_ids), JobTask.status.in_(("queued", "running")))
    )
    session.commit()  # end the read (nothing was written): delete_job takes its own locks
    if busy is not None:
        raise APIError(
            409,
            f"Job {busy} of comparison {comparison_id} has an unfinished export or try-it generation; wait for it "
            "(or cancel it) and delete the comparison then.",
            code="job_in_use",
            param="id",
        )
    for job_id in job_ids:
        # Read afresh, by id: a job deleted on its own meanwhile is already gone (also if that happens just now).
        job = session.get(Job, job_id, populate_existing=True)
        try:
            if job is not None:
                job_service.delete_job(session, settings, job, with_its_comparison=True)
        except APIError as exc:
            if exc.status_code != 404:
                raise
    session.execute(delete(Comparison).where(Comparison.id == comparison_id))
    session.commit()

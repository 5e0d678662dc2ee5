"""A job's length-bias diagnostic, aggregated from the per-step figures the trainer reports (uds/diagnostics.py).

Each step's `stats["length"]` holds means over that step's selection groups, and how many groups each mean is
over (`groups_with_*_rho`: a group of equal lengths or equal scores has no rank correlation). The job's figure
is the mean over all groups, so a step weighs by its count; mean lengths weigh by the step's candidates and
selected examples. `aggregate_length_bias` is torch-free and database-free: the route feeds it rows, tests feed it numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models import Job, JobEvent, StepMetric


@dataclass
class StepLength:
    """What one step contributes: its candidate and selected counts and its `stats` JSON (None if not recorded)."""

    candidates: int | None
    selected: int | None
    stats: dict[str, Any] | None


class _WeightedMean:
    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0

    def add(self, value: Any, weight: Any) -> None:
        # A missing value or weight (older rows, baselines without scores) contributes nothing rather than zero.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(weight, int) and weight > 0:
            self.total += float(value) * weight
            self.weight += weight

    @property
    def mean(self) -> float | None:
        return self.total / self.weight if self.weight else None


def aggregate_length_bias(steps: Iterable[StepLength]) -> dict[str, Any]:
    """The job's mean within-group Spearman(utility, length) and Spearman(score, length), the candidates' and the
    selected examples' mean lengths, selected / candidates, and the steps and groups it is over."""
    utility, score = _WeightedMean(), _WeightedMean()
    candidates, selected = _WeightedMean(), _WeightedMean()
    n_steps = n_groups = 0
    for step in steps:
        length = (step.stats or {}).get("length")
        if not isinstance(length, dict):
            continue  # a step recorded before the diagnostic existed
        n_steps += 1
        groups = (step.stats or {}).get("groups")
        n_groups += groups if isinstance(groups, int) else 0
        utility.add(length.get("spearman_utility_length"), length.get("groups_with_utility_rho"))
        score.add(length.get("spearman_score_length"), length.get("groups_with_score_rho"))
        candidates.add(length.get("mean_length_candidates"), step.candidates)
        selected.add(length.get("mean_length_selected"), step.selected)
    ratio = None
    if candidates.mean and selected.mean is not None:
        ratio = selected.mean / candidates.mean
    return {
        "steps": n_steps,
        "groups": n_groups,
        "spearman_utility_length": utility.mean,
        "spearman_score_length": score.mean,
        "groups_with_utility_rho": utility.weight,
        "groups_with_score_rho": score.weight,
        "mean_length_candidates": candidates.mean,
        "mean_length_selected": selected.mean,
        "selected_to_candidates_length": ratio,
    }


def job_length_bias(session: Session, job: Job) -> dict[str, Any]:
    """The aggregate over the job's recorded steps, with the alpha it ran with (see LengthBiasPublic)."""
    rows = session.execute(
        select(StepMetric.candidates, StepMetric.selected, StepMetric.stats)
        .where(StepMetric.job_id == job.id)
        .order_by(StepMetric.step)
    )
    figures = aggregate_length_bias(StepLength(c, s, stats) for c, s, stats in rows)
    return {
        **figures,
        "job_id": job.id,
        "alpha_setting": (job.config or {}).get("alpha"),
        "alpha_used": job.alpha_used,
        "alpha_paper": _alpha_paper(session, job.id),
    }


def _alpha_paper(session: Session, job_id: str) -> float | None:
    # The trainer's run summary (its "succeeded" event) holds what alpha "paper" is for this job's vocabulary and
    # max length; the API cannot compute it without loading the model. Until then it is unknown.
    events = session.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "succeeded"))
    values = [data["alpha_paper"] for data in events if isinstance(data, dict) and data.get("alpha_paper") is not None]
    return values[-1] if values else None

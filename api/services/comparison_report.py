"""The report of a comparison: uds.comparison computes it from the jobs' final evaluations and times, as the
quality benchmark does (benchmarks/quality/compare_report.py); only succeeded jobs count, so a report is partial
while jobs run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import previews
from api.models import (
    Comparison,
    Dataset,
    Selection,
)
from api.schemas.comparisons import (
    ComparisonReport,
    Difference,
    LabelRow,
    LabelShares,
    MeanSD,
    MetricInfo,
    ReportRow,
    RunCounts,
)
from api.services.comparisons import METRICS, PRIMARY, Run, load_runs, run_counts, run_plan
from api.settings import Settings
from uds.comparison import (
    FULL,
    Metric,
    cost_rows,
    groups,
    label_shares,
    mean_sd,
    paired_comparisons,
    seconds,
)

# ---- the report ------------------------------------------------------------------------------------------------


def _metric_info(metric: Metric) -> MetricInfo:
    return MetricInfo(
        key=metric.key,
        name=metric.name,
        lower_is_better=metric.lower_is_better,
        scale=metric.scale,
        unit=metric.unit.strip(),
    )


def _mean_sd(values: Iterable[float | None]) -> MeanSD | None:
    pair = mean_sd(list(values))
    return MeanSD(mean=pair[0], sd=pair[1]) if pair is not None else None


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b)


def _row_order(comparison: Comparison) -> list[tuple[str, float]]:
    """The report's order (uds.comparison.groups): full first, then by budget, uds first within a budget."""
    plan = run_plan(comparison.methods, comparison.budgets, comparison.include_full)
    return list(groups([{"method": m, "budget": b} for m, b in plan]))


def report_rows(comparison: Comparison, runs: list[dict]) -> list[ReportRow]:
    """Per planned (method, budget): the succeeded runs' means and spreads, and the cost against full."""
    costs = cost_rows(runs)
    rows = []
    for method, budget in _row_order(comparison):
        mine = [r for r in runs if r["method"] == method and _same(r["budget"], budget)]
        cost = next((c for c in costs if c["method"] == method and _same(c["budget"], budget)), None)
        timed = [r for r in mine if r["time_scoring"] is not None and r["time_training"] is not None]
        rows.append(
            ReportRow(
                method=method,
                budget=budget,
                n=len(mine),
                eval_loss=_mean_sd(r["eval_loss"] for r in mine),
                eval_accuracy=_mean_sd(r["eval_accuracy"] for r in mine),
                seconds=_mean_sd(seconds(r) for r in timed),
                time_vs_full=cost["ratio"] if cost else None,
                scoring_share=cost["scoring_share"] if cost else None,
            )
        )
    return rows


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def differences(comparison: Comparison, runs: list[dict]) -> list[Difference]:
    """uds.comparison.paired_comparisons over the comparison's budgets, as JSON rows."""
    result = []
    for row in paired_comparisons(runs, comparison.budgets, METRICS):
        interval = row["interval"]
        result.append(
            Difference(
                method=row["method"],
                budget=row["budget"],
                reference=row["reference"],
                reference_budget=1.0 if row["reference"] == FULL else row["budget"],
                metric=row["metric"].key,
                mean=interval.mean,
                low=_finite(interval.low),
                high=_finite(interval.high),
                n=interval.n,
                verdict=row["verdict"],
                sentence=row["sentence"],
            )
        )
    return result


def _picks_by_row(session: Session, job_ids: list[str]) -> list[tuple[int, int]]:
    """(row, times selected) over the jobs."""
    if not job_ids:
        return []
    rows = session.execute(
        select(Selection.row, func.count())
        .where(Selection.job_id.in_(job_ids), Selection.selected.is_(True))
        .group_by(Selection.row)
    )
    return [(row, int(n)) for row, n in rows]


def label_source(session: Session, settings: Settings, comparison: Comparison) -> bool | None:
    """Whether the file the label shares are read from is still there (None: the report shows no labels); the
    report's validator, with the runs' state."""
    if not comparison.label_field:
        return None
    dataset = session.get(Dataset, comparison.dataset_id)
    return dataset is not None and settings.served_file(dataset.storage_path) is not None


def label_report(
    session: Session, settings: Settings, comparison: Comparison, succeeded: list[Run]
) -> tuple[LabelShares | None, list[str]]:
    """The share of each label in the training file and in what each selector picked (pooled over its succeeded
    runs), and notes on rows without a label; None with a note when the training file is gone."""
    field = str(comparison.label_field)
    dataset = session.get(Dataset, comparison.dataset_id)
    path = settings.served_file(dataset.storage_path) if dataset is not None else None
    if path is None:
        return None, [f"The training dataset {comparison.dataset_id} is gone, so the label shares cannot be shown."]
    row_labels = previews.row_labels(path, field)
    training = Counter(label for label in row_labels if label is not None)
    labels = sorted(training)
    rows = []
    for method, budget in _row_order(comparison):
        if method == FULL:  # full trains on every row: its shares are the training set's
            continue
        job_ids = [r.job.id for r in succeeded if r.job.method == method and _same(r.job.budget, budget)]
        picked, counts = 0, Counter[str]()
        for row, n in _picks_by_row(session, job_ids):
            picked += n
            label = row_labels[row] if 0 <= row < len(row_labels) else None
            if label is not None:
                counts[label] += n
        rows.append(
            LabelRow(method=method, budget=budget, picked=picked, shares=label_shares({k: counts[k] for k in labels}))
        )
    notes = []
    unlabelled = len(row_labels) - sum(training.values())
    if unlabelled:
        notes.append(
            f"{unlabelled} of {len(row_labels)} training rows have no string {field!r} and are left out of the "
            "label shares."
        )
    shares = LabelShares(field=field, labels=labels, training=label_shares(dict(training)), rows=rows)
    return shares, notes


def _runs_phrase(n: int, verb_one: str, verb_many: str) -> str:
    return f"1 run {verb_one}" if n == 1 else f"{n} runs {verb_many}"


def report_notes(counts: RunCounts, succeeded: list[Run], found: list[Difference]) -> list[str]:
    notes = []
    unfinished = counts.queued + counts.running
    if unfinished:
        notes.append(f"Waiting for {unfinished} of {counts.total} runs.")
    if counts.failed:
        notes.append(
            _runs_phrase(counts.failed, "failed and is", "failed and are") + " left out of the paired differences."
        )
    if counts.cancelled:
        notes.append(
            _runs_phrase(counts.cancelled, "was cancelled and is", "were cancelled and are")
            + " left out of the paired differences."
        )
    unevaluated = sum(1 for r in succeeded if r.eval_loss is None)
    if unevaluated:
        notes.append(
            _runs_phrase(unevaluated, "succeeded without", "succeeded without")
            + " a held-out evaluation and count in no loss or exact-match figure."
        )
    if any(d.n == 1 for d in found):
        notes.append(
            "Some differences rest on a single paired seed: their interval is unbounded (low and high null) and "
            "their verdict indistinguishable."
        )
    return notes


def comparison_report(session: Session, settings: Settings, comparison: Comparison) -> ComparisonReport:
    """The report as it stands (partial while jobs run): only succeeded jobs count."""
    all_runs = load_runs(session, [comparison])[comparison.id]
    counts = run_counts(all_runs)
    succeeded = [r for r in all_runs if r.job.status == "succeeded"]
    runs = [r.as_dict() for r in succeeded]
    found = differences(comparison, runs)
    labels, label_notes = (
        label_report(session, settings, comparison, succeeded) if comparison.label_field else (None, [])
    )
    done = counts.succeeded + counts.failed + counts.cancelled
    return ComparisonReport(
        comparison_id=comparison.id,
        complete=done == counts.total,
        runs_done=done,
        runs_total=counts.total,
        primary_metric=PRIMARY.key,
        metrics=[_metric_info(m) for m in METRICS],
        rows=report_rows(comparison, runs),
        differences=found,
        sentences=[d.sentence for d in found if d.metric == PRIMARY.key],
        labels=labels,
        notes=report_notes(counts, succeeded, found) + label_notes,
    )

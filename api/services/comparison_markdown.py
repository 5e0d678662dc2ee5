"""report.md of a comparison: its report (api/services/comparisons.py) as a document to read or file away, laid out
like the quality benchmark's report (benchmarks/quality/compare_report.py)."""

from __future__ import annotations

import json

from api.models import Comparison
from api.schemas.comparisons import ComparisonReport, MeanSD, MetricInfo


def _cell(text: str) -> str:
    """User text (a name, a label) safe inside a table cell or a heading: no pipes, no line breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _budget(budget: float) -> str:
    return f"{budget:.1%}"


def _digits(metric: MetricInfo) -> int:
    return 3 if metric.scale == 1 else 1  # nats to 3 places, points to 1


def _mean_sd(value: MeanSD | None, metric: MetricInfo) -> str:
    if value is None:
        return "n/a"
    d = _digits(metric)
    return f"{value.mean * metric.scale:.{d}f} ± {value.sd * metric.scale:.{d}f}"


def _setup(comparison: Comparison, report: ComparisonReport) -> list[str]:
    selectors = ", ".join(comparison.methods)
    budgets = ", ".join(_budget(b) for b in comparison.budgets)
    settings = f"`{json.dumps(comparison.settings, sort_keys=True)}`" if comparison.settings else "the defaults"
    progress = (
        f"all {report.runs_total} runs finished"
        if report.complete
        else f"partial: {report.runs_done} of {report.runs_total} runs finished"
    )
    return [
        f"# Compare methods: {_cell(comparison.name or comparison.id)}",
        "",
        f"Comparison `{comparison.id}`, created {comparison.created_at:%Y-%m-%d %H:%M} UTC; {progress}.",
        "",
        f"- **Data**: trained on `{comparison.dataset_id}`, judged on the held-out rows of "
        f"`{comparison.eval_dataset_id}`; model `{_cell(comparison.model)}`.",
        f"- **Runs**: {selectors} at {budgets}" + (", and full data" if comparison.include_full else "") + f"; seeds "
        f"0..{comparison.seeds - 1}. A seed fixes the candidate order and the LoRA init for every method, so the runs "
        "of one seed are paired.",
        f"- **Shared settings**: {settings}.",
        "- **Measure**: each run's last evaluation on the held-out rows (answer loss, exact match of the greedy "
        "answer); time = scoring + training seconds. Only succeeded runs count.",
    ]


def _results(report: ComparisonReport) -> list[str]:
    metrics = {m.key: m for m in report.metrics}
    loss, accuracy = metrics["eval_loss"], metrics["eval_accuracy"]  # the rows' two metric columns
    arrows = {True: "↓", False: "↑"}
    lines = [
        "",
        "## Result (mean ± standard deviation over seeds)",
        "",
        f"| method | budget | runs | {loss.name} ({loss.unit}) {arrows[loss.lower_is_better]} | {accuracy.name} "
        f"({accuracy.unit}) {arrows[accuracy.lower_is_better]} | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        seconds = f"{row.seconds.mean:.1f}" if row.seconds else "n/a"
        lines.append(
            f"| {row.method} | {_budget(row.budget)} | {row.n} | {_mean_sd(row.eval_loss, loss)} | "
            f"{_mean_sd(row.eval_accuracy, accuracy)} | {seconds} |"
        )
    return lines


def _differences(report: ComparisonReport) -> list[str]:
    metrics = {m.key: m for m in report.metrics}
    lines = [
        "",
        "## Paired differences (method − reference, 95% t-interval over seeds)",
        "",
        'Negative loss differences and positive exact-match differences favour the method. "Indistinguishable" means '
        "the interval contains 0 at this number of seeds, not that the methods are equal.",
        "",
    ]
    if not report.differences:
        return lines + ["No pair of runs has finished yet."]
    lines += [
        "| method | budget | against | metric | mean difference | 95% interval | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in report.differences:
        metric = metrics[d.metric]
        scale, unit, digits = metric.scale, metric.unit, _digits(metric)
        interval = (
            f"{d.low * scale:+.{digits}f} to {d.high * scale:+.{digits}f}"
            if d.low is not None and d.high is not None
            else "unbounded"
        )
        lines.append(
            f"| {d.method} | {_budget(d.budget)} | {d.reference} | {metric.name} | {d.mean * scale:+.{digits}f} {unit} "
            f"| {interval} | {d.n} | {d.verdict} |"
        )
    primary = metrics[report.primary_metric].name
    lines += ["", f"In words ({primary}, the primary metric):", ""]
    return lines + [f"- {sentence}" for sentence in report.sentences]


def _labels(report: ComparisonReport) -> list[str]:
    shares = report.labels
    if shares is None:
        return []
    header = " | ".join(_cell(label) for label in shares.labels)
    lines = [
        "",
        f"## What each method trained on (by `{_cell(shares.field)}`)",
        "",
        "Share of the examples trained on by label, pooled over the succeeded seeds (first row: the training set).",
        "",
        f"| method | budget | picked | {header} |",
        "|---|---|---|" + "---|" * len(shares.labels),
        "| (training set) | | | " + " | ".join(f"{shares.training.get(k, 0.0):.0%}" for k in shares.labels) + " |",
    ]
    for row in shares.rows:
        cells = " | ".join(f"{row.shares.get(k, 0.0):.0%}" for k in shares.labels)
        lines.append(f"| {row.method} | {_budget(row.budget)} | {row.picked} | {cells} |")
    return lines


def _cost(report: ComparisonReport) -> list[str]:
    lines = [
        "",
        "## Cost against full",
        "",
        "| method | budget | time (s) | of full | scoring share |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        if row.seconds is None:
            continue
        ratio = f"{row.time_vs_full:.2f}" if row.time_vs_full is not None else "n/a"
        share = f"{row.scoring_share:.0%}" if row.scoring_share is not None else "n/a"
        lines.append(f"| {row.method} | {_budget(row.budget)} | {row.seconds.mean:.1f} | {ratio} | {share} |")
    return lines


def _notes(report: ComparisonReport) -> list[str]:
    return ["", "## Notes", "", *[f"- {note}" for note in report.notes]] if report.notes else []


def report_markdown(comparison: Comparison, report: ComparisonReport) -> str:
    lines = (
        _setup(comparison, report)
        + _results(report)
        + _differences(report)
        + _labels(report)
        + _cost(report)
        + _notes(report)
    )
    return "\n".join(lines) + "\n"

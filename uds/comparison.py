"""The analysis of a method comparison: runs in, paired verdicts out. Pure and torch-free, so the quality benchmark
(benchmarks/quality/compare_report.py) and the service's comparisons (api/services/comparisons.py) judge with the
same code.

A run is a dict with at least `method`, `budget`, `seed`, the metrics' keys (a value or None) and, for the cost,
`time_scoring` and `time_training` in seconds. Every selector at every budget is compared with random at the
same budget, uds also with max_loss, and all of them with full data, seed by seed (`uds.paired_stats`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from uds import paired_stats as stats


@dataclass(frozen=True)
class Metric:
    key: str  # in a run
    name: str  # in a report
    lower_is_better: bool
    scale: float = 1.0  # for display: 100 turns a fraction into points
    unit: str = ""


HELD_OUT_LOSS = Metric("eval_loss", "held-out answer loss", True, 1.0, " nats")
TOKEN_ACCURACY = Metric("eval_token_accuracy", "answer-token accuracy", False, 100.0, " pts")
EXACT_MATCH = Metric("eval_accuracy", "exact match", False, 100.0, " pts")

FULL = "full"


def by_seed(runs: list[dict], method: str, budget: float, key: str) -> dict[int, float]:
    """{seed: value of `key`} of the runs of `method` at `budget` that have a value."""
    return {
        r["seed"]: r[key]
        for r in runs
        if r["method"] == method and math.isclose(r["budget"], budget) and r.get(key) is not None
    }


def references_for(method: str, budget: float, methods: list[str]) -> list[tuple[str, float]]:
    """What `method` at `budget` is judged against: random at its budget, max_loss too for uds, and full data."""
    references = [("random", budget)] if method != "random" and "random" in methods else []
    references += [("max_loss", budget)] if method == "uds" and "max_loss" in methods else []
    return references + [(FULL, 1.0)]


def paired_comparisons(runs: list[dict], budgets: list[float], metrics: tuple[Metric, ...]) -> list[dict]:
    """Every selector at every budget against its references (`references_for`): for each metric, the paired
    t-interval of the per-seed difference (method - reference), its verdict and a sentence. Pairs without a common
    seed are left out."""
    methods = list(dict.fromkeys(r["method"] for r in runs if r["method"] != FULL))
    rows = []
    for budget in budgets:
        for method in methods:
            for reference, reference_budget in references_for(method, budget, methods):
                for metric in metrics:
                    diffs = stats.paired_differences(
                        by_seed(runs, method, budget, metric.key),
                        by_seed(runs, reference, reference_budget, metric.key),
                    )
                    if not diffs:
                        continue
                    interval = stats.t_interval(diffs)
                    rows.append(
                        {
                            "method": method,
                            "budget": budget,
                            "reference": reference,
                            "metric": metric,
                            "interval": interval,
                            "verdict": stats.verdict(interval, metric.lower_is_better),
                            "sentence": stats.sentence(
                                f"{method} at {budget:.1%}",
                                reference if reference != FULL else "full data",
                                metric.name,
                                interval,
                                metric.lower_is_better,
                                metric.scale,
                                metric.unit,
                            ),
                        }
                    )
    return rows


def groups(runs: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Runs by (method, budget), in report order: full first, then by budget, uds first within a budget."""
    grouped: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for run in runs:
        grouped[(run["method"], run["budget"])].append(run)
    order = sorted(grouped, key=lambda key: (key[0] != FULL, key[1], key[0] != "uds", key[0]))
    return {key: grouped[key] for key in order}


def seconds(run: dict) -> float:
    return run["time_scoring"] + run["time_training"]


def mean_sd(values: list[Any]) -> tuple[float, float] | None:
    """(mean, sample sd) of the values that are numbers, or None when there are none."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None
    return stats.mean(numbers), stats.sample_sd(numbers)


def cost_rows(runs: list[dict]) -> list[dict]:
    """Per (method, budget): mean time (scoring + training), its ratio to full's mean time (None without full) and
    the scoring share."""
    grouped = groups([r for r in runs if r.get("time_scoring") is not None and r.get("time_training") is not None])
    full = [seconds(r) for r in grouped.get((FULL, 1.0), [])]
    full_mean = stats.mean(full) if full else None
    rows = []
    for (method, budget), rs in grouped.items():
        mean_seconds = stats.mean([seconds(r) for r in rs])
        scoring = stats.mean([r["time_scoring"] for r in rs])
        rows.append(
            {
                "method": method,
                "budget": budget,
                "seconds": mean_seconds,
                "ratio": mean_seconds / full_mean if full_mean else None,
                "scoring_share": scoring / mean_seconds if mean_seconds else 0.0,
            }
        )
    return rows


def label_shares(counts: dict[str, int]) -> dict[str, float]:
    """Counts by label as fractions of their total (all zeros for no counts)."""
    total = sum(counts.values())
    return {label: (n / total if total else 0.0) for label, n in counts.items()}


def pooled_label_counts(runs: list[dict], key: str = "selected_kinds") -> dict[str, int]:
    """The label counts of `runs` (each a {label: count} under `key`) added up over the runs."""
    pooled: dict[str, int] = defaultdict(int)
    for run in runs:
        for label, n in (run.get(key) or {}).items():
            pooled[label] += n
    return dict(pooled)

"""uds.comparison against a naive hand computation on made-up runs: the paired differences (which pairs, in which
order, their t-intervals from printed t-tables, verdicts, sentences) and the cost rows. The service's comparisons
and the quality benchmark's report both stand on these two functions."""

from __future__ import annotations

import math
import random

import pytest

from uds.comparison import EXACT_MATCH, HELD_OUT_LOSS, cost_rows, paired_comparisons

T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446}  # Student's t, 0.975 quantile, by degrees of freedom (tables)
BUDGETS = [0.25, 0.5]
# What each selector is judged against, written out by hand: random at its budget, uds also max_loss, all full.
REFERENCES = {"uds": ["random", "max_loss", "full"], "random": ["full"], "max_loss": ["random", "full"]}


def made_up_runs() -> list[dict]:
    rng = random.Random(7)
    runs = []
    for seed in range(4):
        for method, budget in [("uds", 0.25), ("random", 0.25), ("max_loss", 0.25), ("uds", 0.5), ("random", 0.5)]:
            runs.append(run(rng, method, budget, seed))
        runs.append(run(rng, "full", 1.0, seed))
    runs.append(run(rng, "max_loss", 0.5, 3))  # its only seed is one random at 0.5 lacks: no pair at all
    # Holes a real comparison has: a failed run (absent), a run without one metric, a run without its time.
    runs = [r for r in runs if not (r["method"], r["budget"], r["seed"]) == ("random", 0.5, 3)]
    next(r for r in runs if (r["method"], r["budget"], r["seed"]) == ("uds", 0.25, 2))["eval_accuracy"] = None
    next(r for r in runs if (r["method"], r["seed"]) == ("full", 1))["time_training"] = None
    return runs


def run(rng: random.Random, method: str, budget: float, seed: int) -> dict:
    offset = {"uds": -0.04, "random": 0.0, "max_loss": 0.02, "full": -0.1}[method]
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "eval_loss": 2.0 + offset + 0.05 * seed + rng.gauss(0, 0.02),
        "eval_accuracy": 0.3 - offset + rng.gauss(0, 0.05),
        "time_scoring": 0.0 if method in ("random", "full") else 1.0 + rng.random(),
        "time_training": (4.0 if method == "full" else 4.0 * budget) + rng.random(),
    }


def values(runs: list[dict], method: str, budget: float, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs if (r["method"], r["budget"]) == (method, budget) and r[key] is not None}


def naive_differences(runs: list[dict]) -> list[dict]:
    rows = []
    for budget in BUDGETS:
        for method in ("uds", "random", "max_loss"):  # the order they first appear in the runs
            for reference in REFERENCES[method]:
                reference_budget = 1.0 if reference == "full" else budget
                for metric in (HELD_OUT_LOSS, EXACT_MATCH):
                    mine = values(runs, method, budget, metric.key)
                    theirs = values(runs, reference, reference_budget, metric.key)
                    diffs = [mine[s] - theirs[s] for s in sorted(mine) if s in theirs]
                    if not diffs:
                        continue
                    n = len(diffs)
                    mean = sum(diffs) / n
                    if n == 1:  # one pair says nothing of the spread
                        low, high = -math.inf, math.inf
                    else:
                        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
                        half = T_975[n - 1] * sd / math.sqrt(n)
                        low, high = mean - half, mean + half
                    if low <= 0 <= high:
                        verdict = "indistinguishable"
                    elif (high < 0) == metric.lower_is_better:
                        verdict = "better"
                    else:
                        verdict = "worse"
                    rows.append(
                        {"key": (method, budget, reference, metric.key), "mean": mean, "low": low, "high": high,
                         "n": n, "verdict": verdict}
                    )  # fmt: skip
    return rows


def test_paired_comparisons_match_the_hand_computation():
    runs = made_up_runs()
    expected = naive_differences(runs)
    got = paired_comparisons(runs, BUDGETS, (HELD_OUT_LOSS, EXACT_MATCH))
    assert [(r["method"], r["budget"], r["reference"], r["metric"].key) for r in got] == [e["key"] for e in expected]
    assert ("max_loss", 0.5, "random", "eval_loss") not in [e["key"] for e in expected]  # no common seed
    assert {e["n"] for e in expected} == {1, 3, 4}  # the holes leave 3 pairs here and there; max_loss at 50% one
    for row, want in zip(got, expected, strict=True):
        interval = row["interval"]
        assert interval.n == want["n"] and interval.mean == pytest.approx(want["mean"], abs=1e-12)
        assert interval.low == pytest.approx(want["low"], abs=1e-6)  # the printed t-tables have 7 digits
        assert interval.high == pytest.approx(want["high"], abs=1e-6)
        assert row["verdict"] == want["verdict"], want["key"]
    assert {r["verdict"] for r in got} >= {"better", "indistinguishable"}


def test_a_sentence_says_the_verdict_and_the_numbers():
    runs = made_up_runs()
    row = next(
        r
        for r in paired_comparisons(runs, BUDGETS, (HELD_OUT_LOSS,))
        if (r["method"], r["budget"], r["reference"]) == ("uds", 0.25, "full")
    )
    i = row["interval"]
    relation = {"better": "better than full data", "worse": "worse than full data"}.get(
        row["verdict"], "indistinguishable from full data at this sample size"
    )
    assert row["sentence"] == (
        f"uds at 25.0% is {relation} on held-out answer loss: {i.mean:+.3f} nats "
        f"(95% interval {i.low:+.3f} to {i.high:+.3f}, 4 paired seeds)."
    )


def test_cost_rows_match_the_hand_computation():
    runs = made_up_runs()
    timed = [r for r in runs if r["time_scoring"] is not None and r["time_training"] is not None]

    def mean(xs):
        return sum(xs) / len(xs)

    full = mean([r["time_scoring"] + r["time_training"] for r in timed if r["method"] == "full"])
    got = {(c["method"], c["budget"]): c for c in cost_rows(runs)}
    assert list(got)[0] == ("full", 1.0)  # report order: full first
    assert len(got) == 7
    for (method, budget), row in got.items():
        mine = [r for r in timed if (r["method"], r["budget"]) == (method, budget)]
        seconds = mean([r["time_scoring"] + r["time_training"] for r in mine])
        assert row["seconds"] == pytest.approx(seconds)
        assert row["ratio"] == pytest.approx(seconds / full)
        assert row["scoring_share"] == pytest.approx(mean([r["time_scoring"] for r in mine]) / seconds)
    assert got[("full", 1.0)]["ratio"] == pytest.approx(1.0)
    assert got[("random", 0.25)]["scoring_share"] == 0.0


def test_cost_rows_without_full_have_no_ratio():
    runs = [r for r in made_up_runs() if r["method"] != "full"]
    assert all(row["ratio"] is None for row in cost_rows(runs))

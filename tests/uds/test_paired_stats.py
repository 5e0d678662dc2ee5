"""uds.paired_stats against naive computations (no scipy): numerical integration of the t density, the
textbook formulas, and printed t-table values."""

from __future__ import annotations

import math

import pytest

from uds import paired_stats as stats


def naive_t_cdf(t: float, df: int, steps: int = 20_000) -> float:
    """Simpson's rule on the t density from 0 to |t|, plus the half below 0."""
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))

    def density(x):
        return norm * (1 + x * x / df) ** (-(df + 1) / 2)

    h = abs(t) / steps
    area = density(0) + density(abs(t)) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    half = area * h / 3
    return 0.5 + half if t >= 0 else 0.5 - half


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29])
@pytest.mark.parametrize("t", [-3.0, -0.7, 0.0, 0.4, 2.1, 5.0])
def test_t_cdf_matches_numerical_integration(t, df):
    assert stats.t_cdf(t, df) == pytest.approx(naive_t_cdf(t, df), abs=1e-7)


@pytest.mark.parametrize("df, table", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157), (29, 2.045230)])
def test_t_quantile_matches_printed_tables(df, table):
    assert stats.t_quantile(0.975, df) == pytest.approx(table, abs=1e-5)
    assert stats.t_quantile(0.025, df) == pytest.approx(-table, abs=1e-5)
    assert naive_t_cdf(stats.t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-6)


def test_t_interval_is_the_textbook_formula():
    values = [0.12, -0.03, 0.08, 0.15, 0.02]
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = 2.776445 * sd / math.sqrt(n)  # t_{0.975, 4}
    interval = stats.t_interval(values)
    assert interval.mean == pytest.approx(m)
    assert interval.low == pytest.approx(m - half, abs=1e-6)
    assert interval.high == pytest.approx(m + half, abs=1e-6)
    assert interval.n == 5


def test_paired_differences_match_seeds_and_skip_unpaired():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: None}
    b = {2: 1.5, 0: 0.5, 1: 2.5, 3: 1.0, 4: 9.0}
    assert stats.paired_differences(a, b) == [0.5, -0.5, 1.5]


def test_verdicts_and_sentences():
    lower = stats.Interval(-0.05, -0.08, -0.02, 5)
    around = stats.Interval(0.01, -0.03, 0.05, 5)
    higher = stats.Interval(0.05, 0.02, 0.08, 5)
    assert stats.verdict(lower, lower_is_better=True) == "better"
    assert stats.verdict(lower, lower_is_better=False) == "worse"
    assert stats.verdict(higher, lower_is_better=True) == "worse"
    assert stats.verdict(around, lower_is_better=True) == "indistinguishable"
    text = stats.sentence("uds", "random", "held-out loss", lower, lower_is_better=True)
    assert text.startswith("uds is better than random on held-out loss: -0.050")
    assert "5 paired seeds" in text
    assert "indistinguishable from random at this sample size" in stats.sentence("uds", "random", "loss", around, True)


def test_one_seed_gives_an_unbounded_interval():
    interval = stats.t_interval([0.3])
    assert math.isinf(interval.low) and math.isinf(interval.high)
    assert stats.verdict(interval, True) == "indistinguishable"

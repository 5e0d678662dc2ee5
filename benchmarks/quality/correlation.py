"""Correlations for the premise test: raw, with length controlled, and with bootstrap intervals. Pure functions
(numpy), each checked against a naive loop in tests/benchmarks/test_correlation.py.

Every score selection uses grows with an example's token count, and so may the loss change a step causes; a raw
correlation can be length alone. Two controls: the partial correlation given the token count (both variables with
the linear effect of length removed), and the correlation inside length groups (each variable centred on its
group's mean, groups as selection forms them), so only differences between examples of one group count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranked = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranked[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranked


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; nan when either variable is constant (no correlation can be read)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(ranks(x), ranks(y))


def residuals(y: Sequence[float], z: Sequence[float]) -> np.ndarray:
    """y minus its least-squares line on z (with intercept): what of y the linear effect of z does not explain."""
    b, c = np.asarray(y, dtype=np.float64), np.asarray(z, dtype=np.float64)
    c_centred = c - c.mean()
    spread = (c_centred * c_centred).sum()
    slope = (c_centred * (b - b.mean())).sum() / spread if spread > 0 else 0.0
    return b - b.mean() - slope * c_centred


def partial_pearson(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Correlation of x and y with z's linear effect removed from both."""
    return pearson(residuals(x, z), residuals(y, z))


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """The same on ranks: robust to a non-linear but monotone effect of z."""
    return partial_pearson(ranks(x), ranks(y), ranks(z))


def group_centred(values: Sequence[float], groups: Sequence[int]) -> np.ndarray:
    """Each value minus the mean of its group."""
    x = np.asarray(values, dtype=np.float64)
    labels = np.asarray(groups)
    out = np.empty_like(x)
    for label in np.unique(labels):
        members = labels == label
        out[members] = x[members] - x[members].mean()
    return out


def within_group_pearson(x: Sequence[float], y: Sequence[float], groups: Sequence[int]) -> float:
    """Correlation of the within-group deviations: between-group differences (length) left out."""
    return pearson(group_centred(x, groups), group_centred(y, groups))


def within_group_spearman(x: Sequence[float], y: Sequence[float], groups: Sequence[int]) -> float:
    return within_group_pearson(ranks(x), ranks(y), groups)


def bootstrap_interval(
    statistic: Callable[..., float],
    columns: Sequence[Sequence[float]],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic(*columns)` over `resamples` draws of the rows with replacement (the
    columns resampled together, row by row). Draws where the statistic is undefined (nan) are left out."""
    data = [np.asarray(column) for column in columns]
    n = len(data[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        value = statistic(*(column[index] for column in data))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))

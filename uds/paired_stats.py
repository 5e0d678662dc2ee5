"""Paired-seed statistics for method comparisons (the quality benchmark and the service's comparisons): pure
functions, no scipy.

Every method of a comparison is trained once per seed, and the seed fixes the data order and the LoRA init for
all of them (uds.order.epoch_groups and the seeded LoRA init; tests/benchmarks/test_pairing.py), so method A
and method B on seed s differ only by what they selected. The right comparison is therefore the per-seed
difference A_s - B_s, and a t-interval on its mean: the seed-to-seed spread that both methods share cancels out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def sample_sd(values: list[float]) -> float:
    """Standard deviation with n - 1 in the denominator (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] - b[seed] for the seeds both have, in seed order (unpaired seeds are left out, never mixed in)."""
    return [a[seed] - b[seed] for seed in sorted(set(a) & set(b)) if a[seed] is not None and b[seed] is not None]


# ---------------------------------------------------------------------------------------------------- Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), as in Numerical Recipes."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast only on one side of the mean; use the symmetry I_x(a,b) = 1 - I_1-x(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on t_cdf; monotone, so 200 halvings reach float precision)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def t_interval(values: list[float], confidence: float = 0.95) -> Interval:
    """Mean of `values` with its two-sided t confidence interval (n - 1 degrees of freedom). With one value the
    interval is unbounded: one seed says nothing about the spread."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    m = mean(values)
    if n == 1:
        return Interval(m, -math.inf, math.inf, 1)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sample_sd(values) / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def verdict(interval: Interval, lower_is_better: bool) -> str:
    """ "better", "worse" or "indistinguishable" for the difference (method - reference) in `interval`."""
    if not interval.excludes_zero():
        return "indistinguishable"
    improved = interval.high < 0.0 if lower_is_better else interval.low > 0.0
    return "better" if improved else "worse"


def sentence(
    method: str,
    reference: str,
    metric: str,
    interval: Interval,
    lower_is_better: bool,
    scale: float = 1.0,
    unit: str = "",
) -> str:
    """One plain sentence for the comparison, e.g. "uds is better than random on held-out loss: -0.052 nats
    (95% interval -0.081 to -0.023, 5 paired seeds)"."""
    word = verdict(interval, lower_is_better)
    relation = {
        "better": f"better than {reference}",
        "worse": f"worse than {reference}",
        "indistinguishable": f"indistinguishable from {reference} at this sample size",
    }[word]
    return (
        f"{method} is {relation} on {metric}: {interval.mean * scale:+.3f}{unit} "
        f"(95% interval {interval.low * scale:+.3f} to {interval.high * scale:+.3f}, {interval.n} paired seeds)."
    )

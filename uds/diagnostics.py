"""The length-bias diagnostic: does a job pick the most useful examples, or just the longest?

The nuclear norm of an example's logits grows with its number of rows (tokens), so inside a selection group of
mixed lengths UDS would rank by length. Length grouping keeps groups near-equal in length; these numbers show
whether it worked, per step and per job: the rank correlation of utility (and of the total score) with token
count inside each group, and the mean length of the selected examples against all candidates.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks in float64, ties sharing the mean of the ranks they span (what Spearman's rho needs)."""
    x = values.detach().reshape(-1).to(torch.float64).cpu()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    sorted_x = x[order]
    start = 0
    n = x.numel()
    while start < n:
        stop = start + 1
        while stop < n and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0  # mean of the 1-based ranks start+1 .. stop
        start = stop
    return ranks


def spearman(x: Tensor, y: Tensor) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks); None when either side is constant or n < 2."""
    if x.numel() != y.numel():
        raise ValueError(f"x and y differ in size: {x.numel()} vs {y.numel()}")
    if x.numel() < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float((rx.square().sum() * ry.square().sum()).sqrt())
    if denominator == 0.0:
        return None
    return float((rx * ry).sum()) / denominator


def mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def length_bias(
    lengths: Tensor, utility: Tensor | None, total: Tensor | None, selected: Tensor, group_sizes: Sequence[int]
) -> dict[str, Any]:
    """The step's diagnostic from its candidates in group order.

    lengths/utility/total are [N] over the step's candidates, `selected` a [N] bool mask, `group_sizes` the sizes
    of its consecutive groups. Correlations are averaged over the groups where they are defined (a group whose
    lengths or scores are all equal has none); `groups_with_*` say how many that was, so a job can weight steps.
    """
    per_group_utility, per_group_score = [], []
    start = 0
    for size in group_sizes:
        part = slice(start, start + size)
        if utility is not None:
            per_group_utility.append(spearman(utility[part], lengths[part]))
        if total is not None:
            per_group_score.append(spearman(total[part], lengths[part]))
        start += size
    lengths64 = lengths.detach().to(torch.float64).cpu()
    chosen = selected.detach().cpu().bool()
    return {
        "spearman_utility_length": mean_or_none(per_group_utility),
        "spearman_score_length": mean_or_none(per_group_score),
        "groups_with_utility_rho": sum(v is not None for v in per_group_utility),
        "groups_with_score_rho": sum(v is not None for v in per_group_score),
        "mean_length_candidates": float(lengths64.mean()) if lengths64.numel() else None,
        "mean_length_selected": float(lengths64[chosen].mean()) if bool(chosen.any()) else None,
    }

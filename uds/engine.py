"""One selection step, shared by every training loop: `uds.trainer`'s own loop and the transformers / TRL
integration (`uds.integrations`) both call `measure` then `select`, and weight the loss of the picks with
`step_token_weights` + `weighted_token_loss`. So the two loops cannot drift apart: they differ only in who owns
the optimizer and how a step's candidates are batched (the groups themselves come from `uds.order`).

A step has two halves. `measure` (expensive, independent of the memory buffer) runs one no-grad pass over the
step's candidates and returns per-candidate measures; it may be split across devices, each measuring its share of
the groups. `select` (cheap, sequential) selects the groups in order, pushing each group's picks into the
selector's memory before the next group is seen, and returns the picks with the step's statistics; given the same
measures it picks the same on every device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from uds.diagnostics import length_bias
from uds.models import body_hidden_states
from uds.scoring import summary
from uds.selectors import Measures, Scores, ScoringInputs, Selector, select_groups


@dataclass
class ScoringBatch:
    """A right-padded batch of candidates to measure; `score_mask` (1 = scored token) replaces the attention mask
    for scoring when set (answer tokens only, or each group's shortest length)."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None
    score_mask: Tensor | None = None


@dataclass
class StepSelection:
    """What `select` returns: the step's scores and picks, with the statistics every loop reports."""

    scores: Scores
    chosen: Tensor  # [M] ascending indices into the step's candidates
    picked: Tensor  # [N] bool, True where chosen
    group_sizes: list[int]
    stats: dict[str, Any]  # {"candidates": {...}, "selected": {...}}: summaries of utility, diversity, score
    length: dict[str, Any]  # `uds.diagnostics.length_bias` of the step


def measure(
    model, selector: Selector, head: Any, batches: Iterable[ScoringBatch], count: int, autocast=None
) -> Measures:
    """The measure half of a step: every candidate of `batches` (`count` in all) measured by `selector`.

    `batches` is iterated only when the selector looks at the candidates: random and full pick without looking,
    so they pay for no scoring pass. `autocast` (optional) returns the caller's mixed-precision context for the
    model body, entered afresh for each batch. Dropout is off while measuring (scores must not depend on its draw); the
    model's training mode is restored after.
    """
    if not selector.needs_hidden:
        return Measures(count)
    was_training = model.training
    model.eval()
    try:
        parts = [
            measure_batch(
                model,
                selector,
                head,
                b.input_ids,
                b.attention_mask,
                b.labels,
                b.score_mask,
                autocast=autocast() if autocast else None,
            )
            for b in batches
        ]
    finally:
        model.train(was_training)
    measures = Measures.concat(parts)
    if measures.count != count:
        raise ValueError(f"measured {measures.count} candidates, the step has {count}")
    return measures


def select(
    selector: Selector, measures: Measures, group_sizes: Sequence[int], budget: float, lengths: Tensor
) -> StepSelection:
    """The select half of a step: k of each group in order (the selector's memory pushed after each group).

    `lengths` [N] are the candidates' token counts, for the length diagnostic.
    """
    selection = select_groups(selector, measures, group_sizes, budget)
    scores, chosen = selection.scores, selection.chosen
    picked = torch.zeros(measures.count, dtype=torch.bool)
    picked[chosen] = True
    # `full` ranks nothing (all zeros): a correlation of its "score" with length would be noise, not a finding.
    informative = None if bool((scores.total == 0).all()) else scores.total
    bias = length_bias(lengths, scores.utility, informative, picked, selection.group_sizes)
    return StepSelection(scores, chosen, picked, selection.group_sizes, _selection_stats(scores, chosen), bias)


def _selection_stats(scores: Scores, chosen: Tensor) -> dict[str, Any]:
    def stats_of(index: Tensor | None) -> dict[str, Any]:
        def pick(values: Tensor | None):
            if values is None:
                return None
            return summary(values if index is None else values[index])

        return {"utility": pick(scores.utility), "diversity": pick(scores.diversity), "score": pick(scores.total)}

    return {"candidates": stats_of(None), "selected": stats_of(chosen)}


def flat_stats(step: StepSelection) -> dict[str, float]:
    """One step's selection statistics as flat floats (what TensorBoard / W&B / MLflow accept)."""
    picked = int(step.picked.sum())
    stats: dict[str, float] = {"uds/candidates": int(step.picked.numel()), "uds/selected": picked}
    if step.scores.alpha is not None:
        stats["uds/alpha"] = step.scores.alpha
    for name in ("utility", "diversity", "score"):
        for subset in ("candidates", "selected"):
            described = step.stats[subset][name]
            if described is not None:
                stats[f"uds/{name}_{subset}_mean"] = described["mean"]
    for key in ("spearman_utility_length", "spearman_score_length", "mean_length_candidates", "mean_length_selected"):
        if step.length[key] is not None:
            stats[f"uds/{key}"] = step.length[key]
    return stats


def measure_batch(
    model,
    selector,
    head: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor | None,
    score_mask: Tensor | None = None,
    autocast=None,
) -> Measures:
    """One no-grad pass of the model body (no lm_head) over a right-padded batch, measured by `selector`.

    `score_mask` (1 = scored token) replaces the attention mask for scoring, e.g. the answer tokens only.
    `autocast` is the caller's mixed-precision context for the body; the selector's own arithmetic always runs in
    full precision. The caller puts the model in eval mode (dropout off) and back.
    """
    with torch.no_grad(), autocast or contextlib.nullcontext():
        hidden = body_hidden_states(model, input_ids, attention_mask).float()
    mask = attention_mask if score_mask is None else score_mask
    return selector.measure(ScoringInputs(hidden=hidden, attention_mask=mask, labels=labels, head=head))


def loss_token_count(labels: Sequence[int] | Tensor) -> int:
    """Tokens of one example that carry loss: labels after the first (the first is never predicted), not -100."""
    if isinstance(labels, Tensor):
        return int((labels[1:] != -100).sum())
    return sum(1 for label in labels[1:] if label != -100)


def token_weights(loss_weighting: str, counts: Sequence[int], loss_tokens: int, examples_with_loss: int) -> Tensor:
    """Per-example weight of each of its loss tokens (padding and prompt tokens carry 0 loss anyway).

    Fixed over a whole optimizer step's picks before the first micro-batch, so the accumulated gradient is exactly
    that of one batch however the picks are split: "token" weights every loss token 1 / (all loss tokens);
    "example" (the official script) weights example i's tokens 1 / (T_i * examples), the mean of token means.
    """
    if loss_weighting == "token":
        return torch.full((len(counts),), 1.0 / max(1, loss_tokens))
    return torch.tensor([1.0 / (count * examples_with_loss) if count else 0.0 for count in counts])


def step_token_weights(loss_weighting: str, counts: Sequence[int]) -> Tensor:
    """`token_weights` for one step whose picks have these loss-token counts (all of the step's picks at once)."""
    return token_weights(loss_weighting, counts, sum(counts), sum(1 for count in counts if count))


def weighted_token_loss(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """sum over examples and next-token positions of weight_i * CE: the micro-batch's share of the step's loss."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    per_token = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none")
    return (per_token * weights.to(per_token.device).unsqueeze(1)).sum()


def first_rows_mask(mask: Tensor, rows: Sequence[int] | Tensor) -> Tensor:
    """`mask` [B, L] with each example's positions from `rows[i]` on set to 0 (right-padded batches)."""
    limits = torch.as_tensor(rows, device=mask.device)
    keep = torch.arange(mask.shape[1], device=mask.device)[None, :] < limits[:, None]
    return mask * keep.to(mask.dtype)


def equal_rows_mask(mask: Tensor) -> Tensor:
    """`mask` [B, L] of one selection group cut to the group's shortest example: every candidate scored on the
    same number of token rows, so the nuclear norm (which grows with rows) compares examples, not lengths."""
    shortest = int(mask.sum(dim=1).min())
    return first_rows_mask(mask, [shortest] * mask.shape[0])

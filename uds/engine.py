"""The pieces of one selection step that every training loop shares: `uds.trainer`'s own loop and the
transformers / TRL integration (`uds.integrations`) both score with `measure_batch`, select with
`uds.selectors.select_groups`, and weight the loss of the picks with `token_weights` + `weighted_token_loss`.
So the two loops cannot drift apart: they differ only in who owns the optimizer and the data order.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from uds.models import body_hidden_states
from uds.selectors import Measures, ScoringInputs


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

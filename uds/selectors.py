"""Online batch selectors: UDS and the baselines that share its loop (DESIGN.md section 3).

Per step the trainer calls `scores = sel.scores(inputs)`, `idx = sel.select(scores, k)`,
`sel.update(inputs, scores, idx)`, and checkpoints `sel.state_dict()`. Every selector ranks by `scores.total`
with the same stable top-k, so ties always go to the lower candidate index and a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from uds.config import TrainConfig
from uds.scoring import (
    AutoAlpha,
    MemoryBuffer,
    explicit_scores,
    gram_factor,
    gram_matrix,
    head_projection,
    nuclear_norms_from_factor,
    project,
    projection_matrices,
    token_statistics,
)

# Logit elements one chunk may hold (32 Mi floats = 128 MiB in float32) in the explicit and token-level passes.
_LOGITS_BUDGET = 1 << 25


@dataclass
class ScoringInputs:
    hidden: Tensor | None  # [B, L, d] final-norm hidden states; None for selectors with needs_hidden False
    attention_mask: Tensor  # [B, L], 1 = real token
    labels: Tensor | None  # [B, L], -100 = no loss (only max_loss / max_grad need them)
    head: Any  # OutputHead: .weight [V, d], .is_linear, and .logits(hidden) when not linear


@dataclass
class Scores:
    total: Tensor  # [B] what `select` ranks by
    utility: Tensor | None = None  # [B] u (uds only)
    diversity: Tensor | None = None  # [B] v (uds only)
    alpha: float | None = None  # alpha in use this step (uds only)


class Selector(Protocol):
    name: str
    needs_hidden: bool  # False: the trainer skips the scoring forward pass (random, full)

    def scores(self, inputs: ScoringInputs) -> Scores: ...

    def select(self, scores: Scores, k: int) -> Tensor: ...

    def update(self, inputs: ScoringInputs, scores: Scores, selected: Tensor) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def select_topk(total: Tensor, k: int) -> Tensor:
    """Indices of the k largest values, best first; ties to the lower index. k is capped at len(total).

    A stable sort, not torch.topk, whose tie order is unspecified and differs between CPU and CUDA.
    NaN ranks last: a score that failed numerically must not win a slot.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keys = torch.nan_to_num(total.detach().to(torch.float64), nan=float("-inf"))
    order = torch.sort(keys, descending=True, stable=True).indices
    return order[: min(k, keys.numel())]


def head_logits_fn(head: Any):
    """hidden [..., d] -> logits [..., V] for `head`: its own `.logits` if it has one, else h W^T for a linear head."""
    fn = getattr(head, "logits", None)
    if callable(fn):
        return fn
    if getattr(head, "is_linear", False):
        weight = head.weight.detach()
        return lambda h: h.to(weight.dtype) @ weight.T
    raise ValueError("an output head that is not a plain H W^T must provide .logits(hidden) -> logits")


class _RankByTotal:
    """Shared behaviour: rank by `total`, nothing to remember between steps."""

    name = ""
    needs_hidden = True

    def select(self, scores: Scores, k: int) -> Tensor:
        return select_topk(scores.total, k)

    def update(self, inputs: ScoringInputs, scores: Scores, selected: Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        _check_name(self.name, state)


class UDSSelector(_RankByTotal):
    """s = u + alpha * v: nuclear norm of the logits plus mean distance to the memory of selected projections."""

    name = "uds"

    def __init__(
        self,
        head: Any,
        max_len: int,
        *,
        r_voc: int = 128,
        r_seq: int = 8,
        buffer_size: int = 1024,
        alpha: float | str = "auto",
        alpha_window: int = 50,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        device = torch.device(device)
        weight = head.weight.detach().to(device)
        vocab_size = weight.shape[0]
        self.linear = bool(head.is_linear)
        self.r_seq_matrix, r_voc_matrix = projection_matrices(vocab_size, max_len, r_voc, r_seq, seed, device=device)
        if self.linear:
            # The per-job matrices of the no-logits route: what replaces W for u (F, F F^T = W^T W) and for p (W^T R_voc).
            self.factor = gram_factor(gram_matrix(weight)).to(torch.float32)
            self.w_proj = head_projection(weight, r_voc_matrix)
            self.r_voc_matrix = None
        else:
            self.factor = self.w_proj = None
            self.r_voc_matrix = r_voc_matrix
        self.buffer = MemoryBuffer(buffer_size, r_seq * r_voc, device=device)
        self.auto_alpha = AutoAlpha(alpha_window) if alpha == "auto" else None
        self.fixed_alpha = None if alpha == "auto" else float(alpha)
        # (scores, projections) of the last `scores` call, so `update` pushes them without recomputing.
        self._pending: tuple[Scores, Tensor] | None = None

    @torch.no_grad()
    def scores(self, inputs: ScoringInputs) -> Scores:
        with _full_precision(inputs.hidden.device):
            u, p = self._utility_and_projection(inputs)
            has_memory = len(self.buffer) > 0
            v = self.buffer.mean_distances(p)
            alpha = self.auto_alpha.value(u, v if has_memory else None) if self.auto_alpha else self.fixed_alpha
            scores = Scores(total=u + alpha * v, utility=u, diversity=v, alpha=alpha)
        self._pending = (scores, p)
        return scores

    def _utility_and_projection(self, inputs: ScoringInputs) -> tuple[Tensor, Tensor]:
        hidden, mask = inputs.hidden, inputs.attention_mask
        if self.linear:
            return nuclear_norms_from_factor(hidden, mask, self.factor), project(hidden, mask, self.w_proj, self.r_seq_matrix)
        chunk = max(1, _LOGITS_BUDGET // (hidden.shape[1] * self.r_voc_matrix.shape[0]))
        return explicit_scores(hidden, mask, head_logits_fn(inputs.head), chunk, self.r_voc_matrix, self.r_seq_matrix)

    @torch.no_grad()
    def update(self, inputs: ScoringInputs, scores: Scores, selected: Tensor) -> None:
        if self._pending is not None and self._pending[0] is scores:
            p = self._pending[1]
        else:
            with _full_precision(inputs.hidden.device):
                p = self._utility_and_projection(inputs)[1]
        self._pending = None
        if self.auto_alpha is not None:
            # v is only informative once the buffer held something when these candidates were scored.
            self.auto_alpha.update(scores.utility, scores.diversity if len(self.buffer) > 0 else None)
        self.buffer.push(p[selected.to(p.device)])

    def state_dict(self) -> dict:
        state = {"name": self.name, "buffer": self.buffer.state_dict()}
        if self.auto_alpha is not None:
            state["auto_alpha"] = self.auto_alpha.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        _check_name(self.name, state)
        self.buffer.load_state_dict(state["buffer"])
        if self.auto_alpha is not None and "auto_alpha" in state:
            self.auto_alpha.load_state_dict(state["auto_alpha"])
        self._pending = None


class RandomSelector(_RankByTotal):
    """k uniformly at random: the top k of i.i.d. uniform keys, drawn from the selector's own generator.

    Its own generator (not the global RNG) so that the choice depends only on the seed and the step, and
    the checkpoint restores it exactly.
    """

    name = "random"
    needs_hidden = False

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def scores(self, inputs: ScoringInputs) -> Scores:
        mask = inputs.attention_mask
        keys = torch.rand(mask.shape[0], generator=self.generator)
        return Scores(total=keys.to(mask.device))

    def state_dict(self) -> dict:
        return {"name": self.name, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        _check_name(self.name, state)
        self.generator.set_state(state["generator"])


class FullSelector(_RankByTotal):
    """No selection: every candidate, in order, whatever k is."""

    name = "full"
    needs_hidden = False

    def scores(self, inputs: ScoringInputs) -> Scores:
        mask = inputs.attention_mask
        return Scores(total=torch.zeros(mask.shape[0], device=mask.device))

    def select(self, scores: Scores, k: int) -> Tensor:
        return torch.arange(scores.total.shape[0], device=scores.total.device)


class _TokenStatisticSelector(_RankByTotal):
    statistic = ""

    @torch.no_grad()
    def scores(self, inputs: ScoringInputs) -> Scores:
        if inputs.labels is None:
            raise ValueError(f"the {self.name} selector needs labels")
        head = inputs.head
        head_fn = None if head.is_linear else head_logits_fn(head)
        chunk = max(1, _LOGITS_BUDGET // head.weight.shape[0])
        with _full_precision(inputs.hidden.device):
            stats = token_statistics(inputs.hidden, inputs.attention_mask, inputs.labels, head.weight, chunk, head_fn)
        return Scores(total=getattr(stats, self.statistic))


class MaxLossSelector(_TokenStatisticSelector):
    """The k with the highest mean next-token loss."""

    name = "max_loss"
    statistic = "loss"


class MaxGradSelector(_TokenStatisticSelector):
    """The k with the largest ||softmax(Z) - onehot(y)||_F, the norm of the summed loss's gradient wrt the logits."""

    name = "max_grad"
    statistic = "grad_norm"


def make_selector(config: TrainConfig, head: Any, max_len: int, device: torch.device | str) -> Selector:
    if config.method == "uds":
        return UDSSelector(
            head,
            max_len,
            r_voc=config.proj_r_voc,
            r_seq=config.proj_r_seq,
            buffer_size=config.buffer_size,
            alpha=config.alpha,
            alpha_window=config.alpha_window,
            seed=config.seed,
            device=device,
        )
    if config.method == "random":
        return RandomSelector(config.seed)
    if config.method == "max_loss":
        return MaxLossSelector()
    if config.method == "max_grad":
        return MaxGradSelector()
    if config.method == "full":
        return FullSelector()
    raise ValueError(f"unknown selection method {config.method!r}")


def _check_name(name: str, state: dict) -> None:
    if state.get("name", name) != name:
        raise ValueError(f"checkpoint holds the state of a {state['name']!r} selector, not {name!r}")


def _full_precision(device: torch.device):
    # Scores are float32/float64 by design; an autocast region left open by the caller would silently run
    # the matmuls above in bf16 (2-3 significant digits), far from the 1e-4 the scores promise.
    return torch.autocast(device_type=device.type, enabled=False)

"""Online batch selectors: UDS and the baselines that share its loop.

Selection runs in groups of B candidates, as the paper's code does. Per optimizer step the trainer
1. calls `sel.measure(inputs)` on chunks of the step's candidates (one no-grad pass): what each candidate is,
   independently of the others and of the memory (utility and projection for UDS, loss for max_loss);
2. calls `select_groups(sel, measures, sizes, budget)`, which asks `sel.select_group(group, k)` for each group
   in order; UDS computes diversity against its memory there and pushes the group's picks before the next
   group is seen, so a later pick in the same step is compared with the earlier ones.
Scoring all groups of a step in one pass equals scoring each on its own: the weights do not change inside
gradient accumulation. Every selector ranks with the same stable top-k, so ties go to the lower candidate index
and a run is reproducible. `state_dict()` is what a checkpoint keeps.

Each method is a class marked `@register`, built by `make_selector` through its `from_config`; its name and how
people read it are one line of `uds.methods.REGISTRY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from uds.config import TrainConfig, selected_count
from uds.methods import METHODS
from uds.scoring import (
    AutoAlpha,
    MemoryBuffer,
    explicit_scores,
    gram_factor,
    gram_matrix,
    head_projection,
    nuclear_norms_from_factor,
    paper_alpha,
    project,
    projection_matrices,
    token_statistics,
)

# Logit elements one chunk may hold (32 Mi floats = 128 MiB in float32) in the explicit and token-level passes.
_LOGITS_BUDGET = 1 << 25


@dataclass
class ScoringInputs:
    hidden: Tensor | None  # [B, L, d] final-norm hidden states; None for selectors with needs_hidden False
    attention_mask: Tensor  # [B, L], 1 = real token (or = scored token, with score_on="answer")
    labels: Tensor | None  # [B, L], -100 = no loss (only max_loss / max_grad need them)
    head: Any  # OutputHead: .weight [V, d], .is_linear, and .logits(hidden) when not linear


@dataclass
class Measures:
    """Per-candidate quantities of one scoring pass that do not depend on the memory, in candidate order."""

    count: int
    utility: Tensor | None = None  # [N] u (uds)
    projection: Tensor | None = None  # [N, r_seq * r_voc] p (uds)
    statistic: Tensor | None = None  # [N] mean loss or gradient-norm proxy (max_loss, max_grad)

    def part(self, start: int, stop: int) -> "Measures":
        def cut(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[start:stop]

        return Measures(stop - start, cut(self.utility), cut(self.projection), cut(self.statistic))

    @staticmethod
    def concat(parts: Sequence["Measures"]) -> "Measures":
        def join(name: str) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) or not values else torch.cat(values)

        return Measures(sum(p.count for p in parts), join("utility"), join("projection"), join("statistic"))


@dataclass
class Scores:
    total: Tensor  # [N] what the selection ranked by
    utility: Tensor | None = None  # [N] u (uds only)
    diversity: Tensor | None = None  # [N] v (uds only)
    alpha: float | None = None  # alpha in use (uds only); over several groups, their mean


@dataclass
class GroupedSelection:
    """One step's selection: scores of every candidate, and the picks as indices into the step's candidates."""

    scores: Scores
    chosen: Tensor  # [M] ascending (candidate order within and across groups)
    group_sizes: list[int]
    alphas: list[float]  # per group, uds only


class Selector(Protocol):
    name: str
    needs_hidden: bool  # False: the trainer skips the scoring forward pass (random, full)

    def measure(self, inputs: ScoringInputs) -> Measures: ...

    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def select_groups(
    selector: Selector, measures: Measures, group_sizes: Sequence[int], budget: float
) -> GroupedSelection:
    """Select k = max(1, round(budget * size)) of each consecutive group, in order (each may update the memory)."""
    if sum(group_sizes) != measures.count:
        raise ValueError(f"groups hold {sum(group_sizes)} candidates, the measures {measures.count}")
    parts: list[Scores] = []
    chosen: list[Tensor] = []
    start = 0
    for size in group_sizes:
        scores, picked = selector.select_group(measures.part(start, start + size), selected_count(budget, size))
        parts.append(scores)
        # Candidate order, not score order: the trained set then depends only on which examples were picked
        # (budget 1.0 under any selector equals `full` exactly).
        chosen.append(picked.sort().values.cpu() + start)
        start += size
    alphas = [p.alpha for p in parts if p.alpha is not None]
    scores = Scores(
        total=torch.cat([p.total.float().cpu() for p in parts]),
        utility=_cat_optional([p.utility for p in parts]),
        diversity=_cat_optional([p.diversity for p in parts]),
        alpha=sum(alphas) / len(alphas) if alphas else None,
    )
    return GroupedSelection(scores, torch.cat(chosen), list(group_sizes), alphas)


def _cat_optional(values: list[Tensor | None]) -> Tensor | None:
    if not values or any(v is None for v in values):
        return None
    return torch.cat([v.float().cpu() for v in values if v is not None])


def required(value: Any, what: str) -> Any:
    """`value`, or a ValueError naming what a selector needed and did not get (a caller wiring mistake)."""
    if value is None:
        raise ValueError(f"missing {what}")
    return value


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


_CLASSES: dict[str, Any] = {}


def register(cls):
    """Register `cls` as the class of method `cls.name` (a name of `uds.methods.METHODS`)."""
    if cls.name not in METHODS:
        raise ValueError(f"selector {cls.name!r} has no line in uds.methods.REGISTRY")
    _CLASSES[cls.name] = cls
    return cls


class _Stateless:
    """Shared behaviour: nothing to remember between groups; built from a config without arguments."""

    name = ""
    needs_hidden = True

    @classmethod
    def from_config(cls, config: TrainConfig, head: Any, max_len: int, device: torch.device | str) -> Selector:
        return cls()

    def measure(self, inputs: ScoringInputs) -> Measures:
        return Measures(inputs.attention_mask.shape[0])

    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        _check_name(self.name, state)


@register
class UDSSelector(_Stateless):
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
        alpha: float | str = "paper",
        alpha_window: int = 256,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        device = torch.device(device)
        weight = head.weight.detach().to(device)
        vocab_size = weight.shape[0]
        self.linear = bool(head.is_linear)
        self.r_seq_matrix, r_voc_matrix = projection_matrices(vocab_size, max_len, r_voc, r_seq, seed, device=device)
        self.factor: Tensor | None = None
        self.w_proj: Tensor | None = None
        self.r_voc_matrix: Tensor | None = None
        if self.linear:
            # The per-job matrices of the no-logits route: what replaces W for u (F, F F^T = W^T W) and for p (W^T R_voc).
            self.factor = gram_factor(gram_matrix(weight)).to(torch.float32)
            self.w_proj = head_projection(weight, r_voc_matrix)
        else:
            self.r_voc_matrix = r_voc_matrix
        self.buffer = MemoryBuffer(buffer_size, r_seq * r_voc, device=device)
        # What "paper" means for this job, reported next to whatever alpha is used.
        self.paper_alpha = paper_alpha(vocab_size, max_len)
        self.auto_alpha = AutoAlpha(alpha_window) if alpha == "auto" else None
        self.fixed_alpha = 0.0 if alpha == "auto" else (self.paper_alpha if alpha == "paper" else float(alpha))

    @classmethod
    def from_config(cls, config: TrainConfig, head: Any, max_len: int, device: torch.device | str) -> Selector:
        return cls(
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

    @torch.no_grad()
    def measure(self, inputs: ScoringInputs) -> Measures:
        hidden = required(inputs.hidden, "hidden states")
        with _full_precision(hidden.device):
            u, p = self._utility_and_projection(hidden, inputs.attention_mask, inputs.head)
        return Measures(u.shape[0], utility=u, projection=p)

    def _utility_and_projection(self, hidden: Tensor, mask: Tensor, head: Any) -> tuple[Tensor, Tensor]:
        if self.factor is not None and self.w_proj is not None:
            return nuclear_norms_from_factor(hidden, mask, self.factor), project(
                hidden, mask, self.w_proj, self.r_seq_matrix
            )
        r_voc = required(self.r_voc_matrix, "the vocabulary projection")
        chunk = max(1, _LOGITS_BUDGET // (hidden.shape[1] * r_voc.shape[0]))
        norms, projections = explicit_scores(hidden, mask, head_logits_fn(head), chunk, r_voc, self.r_seq_matrix)
        return norms, required(projections, "projections")

    @torch.no_grad()
    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]:
        u, p = required(group.utility, "utility"), required(group.projection, "projections")
        has_memory = len(self.buffer) > 0
        v = self.buffer.mean_distances(p)
        # v is only informative once the memory held something when the group was scored.
        alpha = self.auto_alpha.value(u, v if has_memory else None) if self.auto_alpha else self.fixed_alpha
        scores = Scores(total=u + alpha * v, utility=u, diversity=v, alpha=alpha)
        chosen = select_topk(scores.total, k)
        if self.auto_alpha is not None:
            self.auto_alpha.update(u, v if has_memory else None)
        self.buffer.push(p[chosen.to(p.device)])
        return scores, chosen

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


@register
class RandomSelector(_Stateless):
    """k uniformly at random of each group: the top k of i.i.d. uniform keys from the selector's own generator.

    Its own generator (not the global RNG) so that the choice depends only on the seed and the position, and
    the checkpoint restores it exactly.
    """

    name = "random"
    needs_hidden = False

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    @classmethod
    def from_config(cls, config: TrainConfig, head: Any, max_len: int, device: torch.device | str) -> Selector:
        return cls(config.seed)

    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]:
        keys = torch.rand(group.count, generator=self.generator)
        return Scores(total=keys), select_topk(keys, k)

    def state_dict(self) -> dict:
        return {"name": self.name, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        _check_name(self.name, state)
        self.generator.set_state(state["generator"])


@register
class FullSelector(_Stateless):
    """No selection: every candidate, in order, whatever k is."""

    name = "full"
    needs_hidden = False

    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]:
        return Scores(total=torch.zeros(group.count)), torch.arange(group.count)


class _TokenStatisticSelector(_Stateless):
    statistic = ""

    @torch.no_grad()
    def measure(self, inputs: ScoringInputs) -> Measures:
        if inputs.labels is None:
            raise ValueError(f"the {self.name} selector needs labels")
        head, hidden = inputs.head, required(inputs.hidden, "hidden states")
        head_fn = None if head.is_linear else head_logits_fn(head)
        chunk = max(1, _LOGITS_BUDGET // head.weight.shape[0])
        with _full_precision(hidden.device):
            stats = token_statistics(hidden, inputs.attention_mask, inputs.labels, head.weight, chunk, head_fn)
        values = getattr(stats, self.statistic)
        return Measures(values.shape[0], statistic=values)

    def select_group(self, group: Measures, k: int) -> tuple[Scores, Tensor]:
        statistic = required(group.statistic, self.statistic)
        return Scores(total=statistic), select_topk(statistic, k)


@register
class MaxLossSelector(_TokenStatisticSelector):
    """The k with the highest mean next-token loss."""

    name = "max_loss"
    statistic = "loss"


@register
class MaxGradSelector(_TokenStatisticSelector):
    """The k with the largest ||softmax(Z) - onehot(y)||_F, the norm of the summed loss's gradient wrt the logits."""

    name = "max_grad"
    statistic = "grad_norm"


def make_selector(config: TrainConfig, head: Any, max_len: int, device: torch.device | str) -> Selector:
    cls = _CLASSES.get(config.method)
    if cls is None:
        raise ValueError(f"unknown selection method {config.method!r}")
    return cls.from_config(config, head, max_len, device)


def _check_name(name: str, state: dict) -> None:
    if state.get("name", name) != name:
        raise ValueError(f"checkpoint holds the state of a {state['name']!r} selector, not {name!r}")


def _full_precision(device: torch.device):
    # Scores are float32/float64 by design; an autocast region left open by the caller would silently run
    # the matmuls above in bf16 (2-3 significant digits), far from the 1e-4 the scores promise.
    return torch.autocast(device_type=device.type, enabled=False)

"""Selectors: what they select, that UDS scores are u + alpha * v with a working memory, determinism, resume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from uds.config import TrainConfig
from uds.methods import METHODS
from uds.scoring import nuclear_norms, project, projection_matrices, token_statistics
from uds.selectors import FullSelector, Measures, ScoringInputs, make_selector, register, select_groups, select_topk

VOCAB, D, MAX_LEN = 60, 16, 24


@dataclass
class Head:
    weight: torch.Tensor
    is_linear: bool = True
    logits: Callable | None = None


def _head(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Head(torch.randn(VOCAB, D, generator=gen) / math.sqrt(D))


def _batches(head, n, batch=8, length=20, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        hidden = torch.randn(batch, length, D, generator=gen)
        lengths = torch.randint(3, length + 1, (batch,), generator=gen)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        labels = torch.randint(0, VOCAB, (batch, length), generator=gen)
        labels[mask == 0] = -100
        out.append(ScoringInputs(hidden=hidden, attention_mask=mask, labels=labels, head=head))
    return out


def _config(method, **kw):
    return TrainConfig(method=method, budget=kw.pop("budget", 0.25), candidate_batch_size=8, **kw)


def _measure(selector, inputs):
    return selector.measure(inputs) if selector.needs_hidden else Measures(inputs.attention_mask.shape[0])


def _run(selector, batches, budget=0.25, sizes=(4, 4)):
    """Each batch of 8 is one step of two groups of 4 (as the trainer calls it); returns the picks per step."""
    return [select_groups(selector, _measure(selector, inputs), sizes, budget).chosen.tolist() for inputs in batches]


def test_a_selector_class_needs_its_line_in_the_registry():
    class Unlisted(FullSelector):
        name = "unlisted"

    with pytest.raises(ValueError, match="uds.methods.REGISTRY"):
        register(Unlisted)


@pytest.mark.parametrize("method", METHODS)
def test_selects_exactly_k_of_every_group(method):
    head = _head()
    selector = make_selector(_config(method), head, MAX_LEN, "cpu")
    assert selector.name == method
    for inputs in _batches(head, 3):
        measures = _measure(selector, inputs)
        for sizes, budget in (((8,), 0.25), ((3, 5), 0.5), ((4, 3, 1), 0.25), ((2, 2, 2, 2), 0.001)):
            result = select_groups(selector, measures, sizes, budget)
            assert result.scores.total.shape == (8,) and result.group_sizes == list(sizes)
            chosen = result.chosen.tolist()
            assert chosen == sorted(set(chosen)) and all(0 <= i < 8 for i in chosen)
            start = 0
            for size in sizes:
                in_group = [i for i in chosen if start <= i < start + size]
                assert len(in_group) == (size if method == "full" else max(1, round(budget * size)))
                start += size
    with pytest.raises(ValueError, match="groups hold"):
        select_groups(selector, measures, (4,), 0.25)


def test_score_fields_per_method():
    head = _head()
    inputs = _batches(head, 1)[0]
    for method in ("random", "full", "max_loss", "max_grad"):
        selector = make_selector(_config(method), head, MAX_LEN, "cpu")
        scores = select_groups(selector, _measure(selector, inputs), (8,), 0.25).scores
        assert scores.utility is None and scores.diversity is None and scores.alpha is None
    stats = token_statistics(inputs.hidden, inputs.attention_mask, inputs.labels, head.weight)
    for method, expected in (("max_loss", stats.loss), ("max_grad", stats.grad_norm)):
        selector = make_selector(_config(method), head, MAX_LEN, "cpu")
        result = select_groups(selector, selector.measure(inputs), (8,), 3 / 8)
        assert torch.equal(result.scores.total, expected)
        assert result.chosen.tolist() == sorted(torch.argsort(expected, descending=True)[:3].tolist())


def test_select_topk_is_stable_and_ranks_nan_last():
    total = torch.tensor([1.0, 3.0, 3.0, float("nan"), 2.0, 3.0])
    assert select_topk(total, 4).tolist() == [1, 2, 5, 4]
    assert select_topk(total, 10).tolist() == [1, 2, 5, 4, 0, 3]
    with pytest.raises(ValueError):
        select_topk(total, 0)


def test_uds_scores_are_utility_plus_alpha_diversity_and_each_group_sees_the_previous_picks():
    head = _head()
    selector = make_selector(
        _config("uds", alpha=0.5, buffer_size=5, proj_r_voc=16, proj_r_seq=4), head, MAX_LEN, "cpu"
    )
    first, second = _batches(head, 2)
    r_seq, r_voc = projection_matrices(VOCAB, MAX_LEN, 16, 4, seed=0)
    p = project(first.hidden, first.attention_mask, head.weight.T @ r_voc, r_seq)

    result = select_groups(selector, selector.measure(first), (4, 4), 0.5)
    scores = result.scores
    torch.testing.assert_close(
        scores.utility, nuclear_norms(first.hidden, first.attention_mask, head.weight), rtol=1e-4, atol=0
    )
    assert scores.alpha == 0.5 and result.alphas == [0.5, 0.5]
    # Group 1 meets an empty memory: it ranks by utility alone.
    assert torch.equal(scores.diversity[:4], torch.zeros(4))
    picked_1 = select_topk(scores.utility[:4], 2).sort().values
    assert result.chosen[:2].tolist() == picked_1.tolist()
    # Group 2, in the same step, is compared with group 1's picks.
    torch.testing.assert_close(scores.diversity[4:], torch.cdist(p[4:], p[picked_1]).mean(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores.total, scores.utility + 0.5 * scores.diversity)
    assert result.chosen[2:].tolist() == (select_topk(scores.total[4:], 2).sort().values + 4).tolist()
    assert len(selector.buffer) == 4
    select_groups(selector, selector.measure(second), (4, 4), 0.5)
    assert len(selector.buffer) == 5  # capacity


def test_paper_alpha_is_the_official_alpha_in_our_units():
    head = _head()
    selector = make_selector(_config("uds"), head, MAX_LEN, "cpu")  # alpha "paper" is the default
    assert selector.fixed_alpha == pytest.approx(1.5e-3 * math.sqrt(VOCAB * MAX_LEN) / 2)
    assert make_selector(_config("uds", alpha="auto"), head, MAX_LEN, "cpu").paper_alpha == selector.fixed_alpha


def test_uds_auto_alpha_matches_within_group_spreads_once_the_memory_has_entries():
    head = _head()
    selector = make_selector(_config("uds", alpha="auto"), head, MAX_LEN, "cpu")
    first, second = _batches(head, 2)
    result = select_groups(selector, selector.measure(first), (8,), 0.25)
    assert result.scores.alpha == 0.0  # nothing in memory, v carries no information yet
    result = select_groups(selector, selector.measure(second), (8,), 0.25)
    scores = result.scores
    assert scores.alpha > 0

    def centred(x):
        x = x.double()
        return x - x.mean()

    # Pooled over the window of groups: u of both, v of the second only (the first met an empty memory).
    first_u = selector.measure(first).utility
    spread_u = torch.cat([centred(first_u), centred(scores.utility)]).square().mean().sqrt()
    spread_v = centred(scores.diversity).square().mean().sqrt()
    assert scores.alpha == pytest.approx(float(spread_u / spread_v), rel=1e-5)
    torch.testing.assert_close(scores.total, scores.utility + scores.alpha * scores.diversity)


def test_uds_explicit_route_for_a_non_linear_head_matches_the_linear_route():
    head = _head()
    weight = head.weight
    as_if_non_linear = Head(weight, is_linear=False, logits=lambda h: h @ weight.T)
    fast = make_selector(_config("uds", alpha=1.0), head, MAX_LEN, "cpu")
    slow = make_selector(_config("uds", alpha=1.0), as_if_non_linear, MAX_LEN, "cpu")
    for inputs in _batches(head, 3):
        slow_inputs = ScoringInputs(inputs.hidden, inputs.attention_mask, inputs.labels, as_if_non_linear)
        a = select_groups(fast, fast.measure(inputs), (4, 4), 0.25)
        b = select_groups(slow, slow.measure(slow_inputs), (4, 4), 0.25)
        torch.testing.assert_close(b.scores.utility, a.scores.utility, rtol=1e-4, atol=0)
        torch.testing.assert_close(b.scores.diversity, a.scores.diversity, rtol=1e-4, atol=1e-4)
        assert torch.equal(a.chosen, b.chosen)
    with pytest.raises(ValueError, match="logits"):
        make_selector(_config("uds"), Head(weight, is_linear=False), MAX_LEN, "cpu").measure(
            ScoringInputs(inputs.hidden, inputs.attention_mask, None, Head(weight, is_linear=False))
        )


def test_measures_split_and_join_without_changing_the_selection():
    head = _head()
    inputs = _batches(head, 1)[0]
    whole = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    chunked = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    parts = [
        chunked.measure(ScoringInputs(inputs.hidden[i : i + 3], inputs.attention_mask[i : i + 3], None, head))
        for i in (0, 3, 6)
    ]
    a = select_groups(whole, whole.measure(inputs), (4, 4), 0.25)
    b = select_groups(chunked, Measures.concat(parts), (4, 4), 0.25)
    torch.testing.assert_close(b.scores.total, a.scores.total, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.chosen, b.chosen)


@pytest.mark.parametrize("method", ["uds", "random"])
def test_same_seed_same_selections(method):
    head = _head()
    runs = [
        _run(make_selector(_config(method, seed=seed), head, MAX_LEN, "cpu"), _batches(head, 4)) for seed in (3, 3, 4)
    ]
    assert runs[0] == runs[1]
    if method == "random":
        assert runs[0] != runs[2]


def test_scoring_ignores_an_open_autocast_region():
    head = _head()
    inputs = _batches(head, 1)[0]
    selector = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    plain = selector.measure(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = selector.measure(inputs)
    assert torch.equal(plain.utility, inside.utility)


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_continues_exactly(method, tmp_path):
    head = _head()
    batches = _batches(head, 6)
    alpha = {"alpha": "auto", "alpha_window": 3} if method == "uds" else {}
    config = _config(method, buffer_size=6, **alpha)
    original = make_selector(config, head, MAX_LEN, "cpu")
    _run(original, batches[:3])
    path = tmp_path / "selector.pt"
    torch.save(original.state_dict(), path)  # as the trainer's checkpoint does: weights_only on load
    resumed = make_selector(config, head, MAX_LEN, "cpu")
    resumed.load_state_dict(torch.load(path, weights_only=True))
    for inputs in batches[3:]:
        a = select_groups(original, _measure(original, inputs), (4, 4), 0.25)
        b = select_groups(resumed, _measure(resumed, inputs), (4, 4), 0.25)
        assert torch.equal(a.scores.total, b.scores.total) and a.alphas == b.alphas
        assert torch.equal(a.chosen, b.chosen)
    with pytest.raises(ValueError, match="selector"):
        other = "random" if method != "random" else "full"
        make_selector(_config(other), head, MAX_LEN, "cpu").load_state_dict(original.state_dict())

"""Selectors: what they select, that UDS scores are u + alpha * v with a working memory, determinism, resume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from uds.config import TrainConfig
from uds.scoring import nuclear_norms, project, projection_matrices, token_statistics
from uds.selectors import Scores, ScoringInputs, make_selector, select_topk

VOCAB, D, MAX_LEN = 60, 16, 24
METHODS = ("uds", "random", "max_loss", "max_grad", "full")


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


def _run(selector, batches, k):
    chosen = []
    for inputs in batches:
        scores = selector.scores(inputs)
        idx = selector.select(scores, k)
        selector.update(inputs, scores, idx)
        chosen.append(idx.tolist())
    return chosen


@pytest.mark.parametrize("method", METHODS)
def test_selects_exactly_k_distinct_candidates(method):
    head = _head()
    selector = make_selector(_config(method), head, MAX_LEN, "cpu")
    assert selector.name == method
    for inputs in _batches(head, 3):
        scores = selector.scores(inputs)
        assert scores.total.shape == (8,)
        for k in (1, 2, 5, 8, 11):
            idx = selector.select(scores, k)
            expected = 8 if method == "full" else min(k, 8)
            assert idx.dtype == torch.long and idx.shape == (expected,)
            assert len(set(idx.tolist())) == expected and all(0 <= i < 8 for i in idx.tolist())
        selector.update(inputs, scores, selector.select(scores, 2))


def test_score_fields_per_method():
    head = _head()
    inputs = _batches(head, 1)[0]
    for method in ("random", "full", "max_loss", "max_grad"):
        scores = make_selector(_config(method), head, MAX_LEN, "cpu").scores(inputs)
        assert scores.utility is None and scores.diversity is None and scores.alpha is None
    stats = token_statistics(inputs.hidden, inputs.attention_mask, inputs.labels, head.weight)
    assert torch.equal(make_selector(_config("max_loss"), head, MAX_LEN, "cpu").scores(inputs).total, stats.loss)
    assert torch.equal(make_selector(_config("max_grad"), head, MAX_LEN, "cpu").scores(inputs).total, stats.grad_norm)
    selector = make_selector(_config("max_loss"), head, MAX_LEN, "cpu")
    assert selector.select(selector.scores(inputs), 3).tolist() == torch.argsort(stats.loss, descending=True)[:3].tolist()


def test_select_topk_is_stable_and_ranks_nan_last():
    total = torch.tensor([1.0, 3.0, 3.0, float("nan"), 2.0, 3.0])
    assert select_topk(total, 4).tolist() == [1, 2, 5, 4]
    assert select_topk(total, 10).tolist() == [1, 2, 5, 4, 0, 3]
    with pytest.raises(ValueError):
        select_topk(total, 0)


def test_uds_scores_are_utility_plus_alpha_diversity_and_the_memory_fills():
    head = _head()
    selector = make_selector(_config("uds", alpha=0.5, buffer_size=5, proj_r_voc=16, proj_r_seq=4), head, MAX_LEN, "cpu")
    first, second = _batches(head, 2)
    scores = selector.scores(first)
    assert torch.equal(scores.diversity, torch.zeros(8))  # empty memory
    torch.testing.assert_close(scores.utility, nuclear_norms(first.hidden, first.attention_mask, head.weight), rtol=1e-4, atol=0)
    assert scores.alpha == 0.5
    idx = selector.select(scores, 3)
    assert torch.equal(idx, select_topk(scores.utility, 3))
    selector.update(first, scores, idx)
    r_seq, r_voc = projection_matrices(VOCAB, MAX_LEN, 16, 4, seed=0)
    expected = project(first.hidden, first.attention_mask, head.weight.T @ r_voc, r_seq)[idx]
    assert len(selector.buffer) == 3
    torch.testing.assert_close(selector.buffer.vectors().float(), expected, rtol=1e-4, atol=1e-4)
    scores = selector.scores(second)
    p = project(second.hidden, second.attention_mask, head.weight.T @ r_voc, r_seq)
    torch.testing.assert_close(scores.diversity, torch.cdist(p, expected).mean(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores.total, scores.utility + 0.5 * scores.diversity)
    selector.update(second, scores, selector.select(scores, 3))
    assert len(selector.buffer) == 5  # capacity


def test_uds_auto_alpha_matches_spreads_once_the_memory_has_entries():
    head = _head()
    selector = make_selector(_config("uds", alpha="auto"), head, MAX_LEN, "cpu")
    batches = _batches(head, 3)
    scores = selector.scores(batches[0])
    assert scores.alpha == 0.0  # nothing in memory, v carries no information yet
    selector.update(batches[0], scores, selector.select(scores, 2))
    scores = selector.scores(batches[1])
    assert scores.alpha > 0
    # Pooled over the window: u of both steps, v of the second only (the first was scored against an empty memory).
    spread_u = torch.cat([selector.auto_alpha._u[0], scores.utility.double()]).std(correction=0)
    assert scores.alpha == pytest.approx(float(spread_u / scores.diversity.double().std(correction=0)))
    torch.testing.assert_close(scores.total, scores.utility + scores.alpha * scores.diversity)


def test_uds_explicit_route_for_a_non_linear_head_matches_the_linear_route():
    head = _head()
    weight = head.weight
    as_if_non_linear = Head(weight, is_linear=False, logits=lambda h: h @ weight.T)
    fast = make_selector(_config("uds", alpha=1.0), head, MAX_LEN, "cpu")
    slow = make_selector(_config("uds", alpha=1.0), as_if_non_linear, MAX_LEN, "cpu")
    for inputs in _batches(head, 3):
        slow_inputs = ScoringInputs(inputs.hidden, inputs.attention_mask, inputs.labels, as_if_non_linear)
        a, b = fast.scores(inputs), slow.scores(slow_inputs)
        torch.testing.assert_close(b.utility, a.utility, rtol=1e-4, atol=0)
        torch.testing.assert_close(b.diversity, a.diversity, rtol=1e-4, atol=1e-4)
        fast.update(inputs, a, fast.select(a, 2))
        slow.update(slow_inputs, b, fast.select(a, 2))
    with pytest.raises(ValueError, match="logits"):
        make_selector(_config("uds"), Head(weight, is_linear=False), MAX_LEN, "cpu").scores(
            ScoringInputs(inputs.hidden, inputs.attention_mask, None, Head(weight, is_linear=False))
        )


def test_update_without_the_pending_scores_recomputes_the_projections():
    head = _head()
    a = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    b = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    inputs = _batches(head, 1)[0]
    scores = a.scores(inputs)
    b.scores(inputs)
    idx = torch.tensor([4, 1])
    a.update(inputs, scores, idx)
    b.update(inputs, Scores(scores.total.clone(), scores.utility, scores.diversity, scores.alpha), idx)
    assert torch.equal(a.buffer.vectors(), b.buffer.vectors())


@pytest.mark.parametrize("method", ["uds", "random"])
def test_same_seed_same_selections(method):
    head = _head()
    runs = [_run(make_selector(_config(method, seed=seed), head, MAX_LEN, "cpu"), _batches(head, 4), 2) for seed in (3, 3, 4)]
    assert runs[0] == runs[1]
    if method == "random":
        assert runs[0] != runs[2]


def test_scoring_ignores_an_open_autocast_region():
    head = _head()
    inputs = _batches(head, 1)[0]
    selector = make_selector(_config("uds"), head, MAX_LEN, "cpu")
    plain = selector.scores(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = selector.scores(inputs)
    assert torch.equal(plain.utility, inside.utility)


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_continues_exactly(method, tmp_path):
    head = _head()
    batches = _batches(head, 6)
    config = _config(method, buffer_size=6, alpha_window=2)
    original = make_selector(config, head, MAX_LEN, "cpu")
    _run(original, batches[:3], 2)
    path = tmp_path / "selector.pt"
    torch.save(original.state_dict(), path)  # as the trainer's checkpoint does: weights_only on load
    resumed = make_selector(config, head, MAX_LEN, "cpu")
    resumed.load_state_dict(torch.load(path, weights_only=True))
    for inputs in batches[3:]:
        a, b = original.scores(inputs), resumed.scores(inputs)
        assert torch.equal(a.total, b.total) and a.alpha == b.alpha
        ia, ib = original.select(a, 2), resumed.select(b, 2)
        assert torch.equal(ia, ib)
        original.update(inputs, a, ia)
        resumed.update(inputs, b, ib)
    with pytest.raises(ValueError, match="selector"):
        other = "random" if method != "random" else "full"
        make_selector(_config(other), head, MAX_LEN, "cpu").load_state_dict(original.state_dict())

"""Parity of the no-logits scores with naive references that materialise the logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from uds.scoring import (
    AutoAlpha,
    MemoryBuffer,
    explicit_scores,
    gram_factor,
    gram_matrix,
    head_projection,
    nuclear_norms,
    nuclear_norms_explicit,
    nuclear_norms_from_factor,
    nuclear_norms_from_gram,
    official_distance_scale,
    paper_alpha,
    project,
    projection_matrices,
    summary,
    token_statistics,
)


def _reference_nuclear(hidden, mask, weight):
    return torch.linalg.svdvals((hidden @ weight.T) * mask[..., None]).sum(-1)


def _random_batch(gen, batch, length, d, vocab, pad=True):
    hidden = torch.randn(batch, length, d, generator=gen)
    weight = torch.randn(vocab, d, generator=gen) / math.sqrt(d)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return hidden, mask, weight


def _assert_close_rel(got, ref, rtol=1e-4):
    scale = ref.abs().max().clamp_min(1e-12)
    assert got.shape == ref.shape
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref.to(got.dtype), rtol=rtol, atol=rtol * float(scale))


# (B, L, d, V): d > L, L > d, V < d (singular W^T W), V < L, B = 1, L = 1.
SHAPES = [
    (4, 12, 32, 50),
    (3, 40, 8, 60),
    (2, 20, 16, 6),
    (3, 30, 4, 10),
    (1, 17, 17, 40),
    (5, 1, 8, 9),
    (1, 64, 48, 300),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%d-L%d-d%d-V%d" % s)
def test_nuclear_norms_match_svdvals_of_explicit_logits(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    hidden, mask, weight = _random_batch(gen, *shape)
    _assert_close_rel(nuclear_norms(hidden, mask, weight), _reference_nuclear(hidden, mask, weight))


def test_random_shapes_with_padding_and_an_all_padding_example():
    gen = torch.Generator().manual_seed(1234)
    for _ in range(12):
        batch, length, d, vocab = (
            int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((1, 6), (1, 48), (2, 48), (2, 120))
        )
        hidden, mask, weight = _random_batch(gen, batch, length, d, vocab)
        mask[0] = 0  # an example that is all padding: its logits are zero, its nuclear norm 0
        ref = _reference_nuclear(hidden, mask, weight)
        got = nuclear_norms(hidden, mask, weight)
        _assert_close_rel(got, ref)
        assert got[0] == 0


def test_left_padding_and_all_padded_columns_are_handled():
    gen = torch.Generator().manual_seed(5)
    hidden, _, weight = _random_batch(gen, 3, 20, 12, 40)
    mask = torch.zeros(3, 20, dtype=torch.long)
    mask[0, 5:15] = 1  # left and right padding, and columns 15.. padded in every example
    mask[1, 2:9] = 1
    mask[2, 0:12] = 1
    _assert_close_rel(nuclear_norms(hidden, mask, weight), _reference_nuclear(hidden, mask, weight))


def test_float64_eigen_solve_keeps_a_decaying_spectrum_accurate():
    # LLM-like logits: a massive direction and singular values spread over four decades. A float32
    # eigen-solve of the squared problem is off by ~1e-4 here; the float64 route must be far inside that.
    gen = torch.Generator().manual_seed(0)
    d = 96
    hidden = torch.randn(3, 80, d, generator=gen) * torch.logspace(0, -4, d)
    hidden[..., 3] += 30
    weight = torch.randn(2000, d, generator=gen) * torch.logspace(0, -2, d)
    mask = torch.ones(3, 80)
    mask[1, 60:] = 0
    exact = torch.linalg.svdvals((hidden.double() @ weight.double().T) * mask.double()[..., None]).sum(-1)
    got = nuclear_norms(hidden, mask, weight)
    assert ((got.double() - exact) / exact).abs().max() < 2e-6


def test_gram_and_factor_entry_points_agree():
    gen = torch.Generator().manual_seed(7)
    for length in (10, 40):  # both sides: L <= d and L > d
        hidden, mask, weight = _random_batch(gen, 3, length, 24, 100)
        gram = gram_matrix(weight, chunk_rows=7)  # chunking must not change the sum
        torch.testing.assert_close(gram, weight.double().T @ weight.double())
        factor = gram_factor(gram)
        torch.testing.assert_close(factor @ factor.T, gram)
        ref = _reference_nuclear(hidden, mask, weight)
        _assert_close_rel(nuclear_norms_from_gram(hidden, mask, gram), ref)
        _assert_close_rel(nuclear_norms_from_factor(hidden, mask, factor), ref)


def test_bfloat16_hidden_states_are_accepted():
    gen = torch.Generator().manual_seed(3)
    hidden, mask, weight = _random_batch(gen, 2, 10, 16, 30)
    hidden = hidden.to(torch.bfloat16)
    _assert_close_rel(nuclear_norms(hidden, mask, weight), _reference_nuclear(hidden.float(), mask, weight))


def test_explicit_fallback_matches_svdvals_and_holds_chunk_size_examples():
    gen = torch.Generator().manual_seed(11)
    hidden, mask, weight = _random_batch(gen, 5, 30, 16, 50)
    bias = torch.randn(50, generator=gen)
    seen = []

    def softcapped(h):  # a head that is not H W^T: bias and soft-capping
        seen.append(h.shape[0])
        return 5.0 * torch.tanh((h @ weight.T + bias) / 5.0)

    got = nuclear_norms_explicit(hidden, mask, softcapped, chunk_size=2)
    ref = torch.linalg.svdvals(softcapped(hidden) * mask[..., None]).sum(-1)
    _assert_close_rel(got, ref)
    assert max(seen[:-1]) <= 2
    for length in (8, 30):  # V > L and V < L sides of the explicit Gram
        h, m, w = _random_batch(gen, 3, length, 6, 20)
        _assert_close_rel(nuclear_norms_explicit(h, m, lambda x: x @ w.T, chunk_size=3), _reference_nuclear(h, m, w))  # noqa: B023 (called before the loop moves on)


def test_projection_matrices_are_deterministic_and_scaled():
    r_seq, r_voc = projection_matrices(vocab_size=3000, max_len=64, r_voc=128, r_seq=8, seed=5)
    again = projection_matrices(3000, 64, 128, 8, seed=5)
    other = projection_matrices(3000, 64, 128, 8, seed=6)
    assert r_seq.shape == (8, 64) and r_voc.shape == (3000, 128)
    assert r_seq.dtype == r_voc.dtype == torch.float32
    assert torch.equal(r_seq, again[0]) and torch.equal(r_voc, again[1])
    assert not torch.equal(r_voc, other[1])
    assert abs(float(r_voc.var()) * 128 - 1) < 0.02
    assert abs(float(r_seq.var()) * 8 - 1) < 0.3
    state = torch.random.get_rng_state()
    projection_matrices(100, 8, 4, 2, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


def test_project_equals_the_bilinear_map_of_explicit_zero_padded_logits():
    gen = torch.Generator().manual_seed(2)
    hidden, mask, weight = _random_batch(gen, 4, 20, 12, 70)
    r_seq, r_voc = projection_matrices(70, 32, r_voc=16, r_seq=4, seed=0)
    logits = (hidden @ weight.T) * mask[..., None]
    padded = torch.zeros(4, 32, 70)
    padded[:, :20] = logits
    ref = (r_seq @ padded @ r_voc).reshape(4, -1)
    got = project(hidden, mask, head_projection(weight, r_voc, chunk_rows=9), r_seq)
    assert got.shape == (4, 64)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    norms, projections = explicit_scores(hidden, mask, lambda h: h @ weight.T, 3, r_voc, r_seq)
    torch.testing.assert_close(projections, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    _assert_close_rel(norms, _reference_nuclear(hidden, mask, weight))
    with pytest.raises(ValueError, match="max_len"):
        project(torch.zeros(1, 33, 12), torch.ones(1, 33), torch.zeros(12, 16), r_seq)


def _pairwise_ratios(r_voc_dim, r_seq_dim, seed):
    gen = torch.Generator().manual_seed(99)
    hidden, mask, weight = _random_batch(gen, 24, 24, 16, 300)
    logits = ((hidden @ weight.T) * mask[..., None]).reshape(24, -1).double()
    r_seq, r_voc = projection_matrices(300, 32, r_voc_dim, r_seq_dim, seed)
    p = project(hidden, mask, head_projection(weight, r_voc), r_seq).double()
    i, j = torch.triu_indices(24, 24, 1)
    return (p[i] - p[j]).norm(dim=-1) / (logits[i] - logits[j]).norm(dim=-1)


def test_projected_distances_estimate_frobenius_distances():
    # Default size (8 x 128): unbiased on average over the random matrices.
    mean_over_seeds = torch.stack([_pairwise_ratios(128, 8, seed).mean() for seed in range(20)]).mean()
    assert abs(float(mean_over_seeds) - 1) < 0.05
    # Large r: every pair is close for one fixed draw.
    ratios = _pairwise_ratios(512, 64, seed=0)
    assert abs(float(ratios.mean()) - 1) < 0.07
    assert 0.85 < float(ratios.min()) and float(ratios.max()) < 1.15


def test_memory_buffer_fifo_wrap_around_and_bulk_push():
    buf = MemoryBuffer(capacity=4, dim=2)
    assert len(buf) == 0
    rows = torch.arange(14, dtype=torch.float32).reshape(7, 2)  # row i = (2i, 2i+1)
    buf.push(rows[:3])
    assert len(buf) == 3 and torch.equal(buf.vectors(), rows[:3])
    buf.push(rows[3:5])  # wraps: the oldest (row 0) is overwritten
    assert len(buf) == 4 and torch.equal(buf.vectors(), rows[1:5])
    buf.push(rows[5:6])
    assert torch.equal(buf.vectors(), rows[2:6])
    big = MemoryBuffer(capacity=4, dim=2)
    big.push(rows[:1])
    big.push(rows[1:7])  # more than capacity at once: the newest 4 survive, in order
    assert torch.equal(big.vectors(), rows[3:7])
    one_by_one = MemoryBuffer(capacity=4, dim=2)
    for r in rows:
        one_by_one.push(r[None])
    assert torch.equal(one_by_one.vectors(), big.vectors())
    assert torch.equal(one_by_one.storage, big.storage) and one_by_one.ptr == big.ptr


def test_memory_buffer_mean_distances():
    gen = torch.Generator().manual_seed(4)
    buf = MemoryBuffer(capacity=8, dim=5)
    p = torch.randn(3, 5, generator=gen) * 100
    assert torch.equal(buf.mean_distances(p), torch.zeros(3))  # 0 while empty
    stored = torch.randn(6, 5, generator=gen) * 100
    buf.push(stored)
    ref = torch.cdist(p.double(), stored.double(), compute_mode="donot_use_mm_for_euclid_dist").mean(-1)
    torch.testing.assert_close(buf.mean_distances(p).double(), ref, rtol=1e-6, atol=0)
    # Nearby points far from the origin: where the expanded form loses everything in float32.
    base = torch.full((1, 5), 1e4)
    near = MemoryBuffer(capacity=2, dim=5)
    near.push(base + torch.tensor([[2.0**-6, 0, 0, 0, 0]]))  # exactly representable next to 1e4
    torch.testing.assert_close(near.mean_distances(base), torch.tensor([2.0**-6]), rtol=1e-4, atol=0)


def test_memory_buffer_state_round_trip_continues_exactly(tmp_path):
    gen = torch.Generator().manual_seed(8)
    buf = MemoryBuffer(capacity=5, dim=3)
    buf.push(torch.randn(7, 3, generator=gen))
    path = tmp_path / "buffer.pt"
    torch.save(buf.state_dict(), path)
    restored = MemoryBuffer(capacity=5, dim=3)
    restored.load_state_dict(torch.load(path, weights_only=True))
    more, query = torch.randn(2, 3, generator=gen), torch.randn(4, 3, generator=gen)
    for b in (buf, restored):
        b.push(more)
    assert len(restored) == len(buf) == 5
    assert torch.equal(restored.vectors(), buf.vectors())
    assert torch.equal(restored.mean_distances(query), buf.mean_distances(query))
    with pytest.raises(ValueError):
        MemoryBuffer(capacity=4, dim=3).load_state_dict(buf.state_dict())


def _naive_token_statistics(logits, labels):
    """Full (B, L, V) logits, HF shift, F.cross_entropy per example and the autograd gradient of the summed CE."""
    logits = logits.detach().double().requires_grad_(True)
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    losses, counts = [], []
    total = 0
    for i in range(logits.shape[0]):
        n = int((shift_labels[i] != -100).sum())
        counts.append(n)
        if n:
            ce = F.cross_entropy(shift_logits[i], shift_labels[i], ignore_index=-100, reduction="sum")
            losses.append(float(ce.detach()) / n)
            total = total + ce
        else:
            losses.append(0.0)
    (grad,) = torch.autograd.grad(total, logits)
    return torch.tensor(losses), grad.flatten(1).norm(dim=-1), torch.tensor(counts)


def test_token_statistics_match_full_logits_cross_entropy_and_autograd():
    gen = torch.Generator().manual_seed(21)
    batch, length, d, vocab = 4, 15, 8, 37
    hidden, mask, weight = _random_batch(gen, batch, length, d, vocab)
    hidden = hidden * 3  # some confident predictions
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    labels[mask == 0] = -100
    labels[1, 3:6] = -100  # loss only on part of an example
    labels[2] = -100  # an example with no loss tokens at all
    ref_loss, ref_grad, ref_count = _naive_token_statistics(hidden @ weight.T, labels)
    for chunk in (1, 4, 1000):
        stats = token_statistics(hidden, mask, labels, weight, chunk_size=chunk)
        torch.testing.assert_close(stats.loss.double(), ref_loss.double(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats.grad_norm.double(), ref_grad, rtol=1e-5, atol=1e-6)
        assert torch.equal(stats.tokens, ref_count)
    assert stats.loss[2] == 0 and stats.grad_norm[2] == 0
    # F.cross_entropy over the whole batch, HF style, is the token-weighted mean of the per-example losses.
    hf = F.cross_entropy((hidden @ weight.T)[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close((stats.loss * stats.tokens).sum() / stats.tokens.sum(), hf, rtol=1e-5, atol=1e-6)


def test_token_statistics_with_head_fn_and_confident_tokens():
    gen = torch.Generator().manual_seed(22)
    labels = torch.randint(0, 11, (3, 9), generator=gen)
    # Nearly certain predictions (1 - p_y = 8e-6): loss and gradient norm are ~1e-5, not rounding noise of p_y ~ 1.
    # An identity head_fn, so the hidden states are the logits.
    logits = torch.full((3, 9, 11), -14.0)
    logits.scatter_(-1, labels.roll(-1, dims=1)[..., None], 0.0)
    stats = token_statistics(logits, torch.ones(3, 9), labels, None, chunk_size=5, head_fn=lambda h: h.clone())
    ref_loss, ref_grad, _ = _naive_token_statistics(logits, labels)
    torch.testing.assert_close(stats.loss.double(), ref_loss.double(), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats.grad_norm.double(), ref_grad, rtol=1e-5, atol=0)
    assert float(ref_grad.max()) < 1e-4


def _centred(*parts):
    return torch.cat([p.double() - p.double().mean() for p in parts])


def _rms(x):
    return x.square().mean().sqrt()


def test_auto_alpha_balances_within_group_spreads():
    auto = AutoAlpha(window=3)
    u1 = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert auto.value(u1, None) == 0.0  # empty buffer: no v yet
    auto.update(u1, None)
    assert auto.value(u1, torch.full((4,), 7.0)) == 0.0  # v without spread cannot change the ranking
    v2 = torch.tensor([0.1, 0.3, 0.2, 0.4])
    expected = _rms(_centred(u1, u1)) / _rms(_centred(v2))
    assert auto.value(u1, v2) == pytest.approx(float(expected))
    auto.update(u1, v2)
    u3, v3 = torch.tensor([10.0, 30.0, 20.0, 0.0]), torch.tensor([1.0, 2.0, 3.0, 5.0])
    auto.update(u3, v3)  # window 3: the next value sees groups 2, 3 and the current one; group 1 is gone
    u4, v4 = torch.tensor([5.0, 6.0, 7.0, 8.0]), torch.tensor([0.5, 0.6, 0.7, 0.9])
    expected = _rms(_centred(u1, u3, u4)) / _rms(_centred(v2, v3, v4))
    assert auto.value(u4, v4) == pytest.approx(float(expected))
    # A group's offset (its length, under length grouping) is not spread that any selection compares.
    assert auto.value(u4 + 1000.0, v4 + 50.0) == pytest.approx(float(expected))
    restored = AutoAlpha(window=3)
    restored.load_state_dict(auto.state_dict())
    assert restored.value(u4, v4) == auto.value(u4, v4)


def test_paper_alpha_converts_the_official_scale():
    assert official_distance_scale(151_936, 512) == pytest.approx(4409.6, rel=1e-4)
    assert paper_alpha(151_936, 512) == pytest.approx(6.61, rel=1e-3)  # Qwen2.5's vocabulary at cutoff 512


def test_summary():
    s = summary(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert s == {"mean": 3.0, "std": pytest.approx(math.sqrt(3.5)), "min": 1.0, "max": 6.0}
    assert all(type(x) is float for x in s.values())
    assert summary(torch.tensor([5.0])) == {"mean": 5.0, "std": 0.0, "min": 5.0, "max": 5.0}
    assert summary(torch.tensor([])) is None and summary(None) is None

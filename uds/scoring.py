"""The UDS scores as small pure functions, computed from hidden states, never from logits.

For example i with masked final hidden states H_i (L x d) and output embedding W (V x d) the logits are
Z_i = H_i W^T (L x V). Everything UDS needs from Z_i follows from H_i and two per-job matrices:

- nuclear norm ||Z_i||_*: the singular values of Z_i are the square roots of the eigenvalues of
  H_i G H_i^T (L x L) or of F^T H_i^T H_i F (d x d), with G = W^T W = F F^T (F computed once per job);
- projection R_seq Z_i R_voc = R_seq H_i (W^T R_voc), with W^T R_voc (d x r_voc) precomputed.

So scoring costs O(B L d min(L, d)) time and O(B L d) memory instead of O(B L V) for both.
Heads that are not a plain H W^T (bias, soft-capping) use the `*_explicit` fallbacks, which compute logits
a few examples at a time. `token_statistics` (loss and gradient-norm proxy, for the baselines) needs
the softmax, so it works through label positions in chunks and never holds (B, L, V).

Conventions: masks are [B, L] with non-zero = real token; results are float32 on the input's device.
Standard deviations are population ones (ddof 0), so one value has spread 0, never NaN.
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import contextmanager
from typing import Callable, NamedTuple

import torch
from torch import Tensor

LogitsFn = Callable[[Tensor], Tensor]

# Rows of W cast to float64 at a time when reducing over the vocabulary: bounds the temporary copy
# (8192 x d float64, 32 MiB at d = 512) while keeping the reduction a handful of large matmuls.
_VOCAB_CHUNK = 8192


# ------------------------------------------------------------------------------------------- nuclear norm


def gram_matrix(weight: Tensor, chunk_rows: int = _VOCAB_CHUNK) -> Tensor:
    """G = W^T W (d x d), float64, on W's device.

    Accumulated in float64 because G is squared-magnitude data summed over ~1e5 vocabulary rows: in float32
    its small eigen-directions (the ones that carry the small singular values of Z) drown in rounding.
    Chunked over rows so W is never copied whole to float64 (that would be 4.4 GB for a 7B model's head).
    """
    vocab, d = weight.shape
    gram = torch.zeros(d, d, dtype=torch.float64, device=weight.device)
    for start in range(0, vocab, chunk_rows):
        rows = weight[start : start + chunk_rows].detach().to(torch.float64)
        gram.addmm_(rows.T, rows)
    return gram


def gram_factor(gram: Tensor) -> Tensor:
    """F (d x d, float64) with F F^T = G, from the eigen-decomposition of G (works for singular G, unlike Cholesky).

    H F has the same singular values as H W^T (both have Gram H G H^T) but d columns instead of V, so it is
    the per-job stand-in for the output head. A d^3 eigh: compute it once per job (the selector does).
    """
    evals, evecs = torch.linalg.eigh(gram.to(torch.float64))
    return evecs * evals.clamp_min(0).sqrt()


def nuclear_norms(hidden: Tensor, mask: Tensor, weight: Tensor) -> Tensor:
    """||(H_i W^T) * m_i||_* for each example, without forming the logits. [B, L, d], [B, L], [V, d] -> [B]."""
    return nuclear_norms_from_gram(hidden, mask, gram_matrix(weight))


def nuclear_norms_from_gram(hidden: Tensor, mask: Tensor, gram: Tensor) -> Tensor:
    """Nuclear norms of the masked logits from G = W^T W (`gram_matrix`). Factors G on every call: reuse
    `gram_factor(G)` with `nuclear_norms_from_factor` when scoring many batches."""
    return nuclear_norms_from_factor(hidden, mask, gram_factor(gram))


def nuclear_norms_from_factor(hidden: Tensor, mask: Tensor, factor: Tensor) -> Tensor:
    """Nuclear norms of the masked logits from F = `gram_factor(W^T W)`: ||Z_i||_* = ||(m_i * H_i) F||_*.

    Y_i = (m_i * H_i) F is formed in float32: its rounding is that of forming Z_i = H_i W^T itself, which the
    reference svdvals also pays. Then the Gram of Y_i's smaller side (L x L when L <= d, else d x d) and one
    batched eigvalsh over the whole batch, both in float64: those eigenvalues are squared singular values, so
    float32 would blur every singular value below ~sqrt(eps32) * sigma_max (3e-4 relative), which is where
    most of an LLM's logit spectrum lives.
    """
    hidden, mask = _drop_padding_columns(hidden, mask)
    batch, length, d = hidden.shape
    if batch == 0 or length == 0:
        return hidden.new_zeros(batch, dtype=torch.float32)
    h = hidden.to(torch.float32) * mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
    y = (h @ factor.to(device=h.device, dtype=torch.float32)).to(torch.float64)
    squared = y @ y.transpose(1, 2) if length <= d else y.transpose(1, 2) @ y
    return _sum_sqrt_eigvals(squared).to(torch.float32)


def nuclear_norms_explicit(hidden: Tensor, mask: Tensor, logits_fn: LogitsFn, chunk_size: int = 1) -> Tensor:
    """Nuclear norms of logits_fn(hidden) * mask, for heads that are not H W^T. Holds chunk_size examples' logits at once."""
    return explicit_scores(hidden, mask, logits_fn, chunk_size)[0]


def explicit_scores(
    hidden: Tensor,
    mask: Tensor,
    logits_fn: LogitsFn,
    chunk_size: int = 1,
    r_voc_matrix: Tensor | None = None,
    r_seq_matrix: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Nuclear norms [B] and, when both R matrices are given, projections [B, r_seq * r_voc], from explicit logits.

    One pass: each chunk's logits serve both, so a non-linear head is evaluated once per example.
    `logits_fn` must return a new tensor (it is masked in place).
    """
    mask = mask.to(hidden.device)
    batch = hidden.shape[0]
    norms = hidden.new_zeros(batch, dtype=torch.float32)
    projections = r_seq_full = r_voc = None
    if r_voc_matrix is not None and r_seq_matrix is not None:
        _check_length(hidden.shape[1], r_seq_matrix)
        projections = hidden.new_zeros(batch, r_seq_matrix.shape[0] * r_voc_matrix.shape[1], dtype=torch.float32)
        r_seq_full = r_seq_matrix[:, : hidden.shape[1]].to(device=hidden.device, dtype=torch.float32)
        r_voc = r_voc_matrix.to(device=hidden.device, dtype=torch.float32)
    # Positions padded in every example contribute zero rows to every Z_i: skipping them is exact and saves logits.
    keep = (mask != 0).any(0)
    hidden_kept, mask_kept = hidden[:, keep], mask[:, keep]
    for start in range(0, batch, max(1, chunk_size)):
        stop = min(batch, start + max(1, chunk_size))
        m = mask_kept[start:stop].to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
        logits = logits_fn(hidden_kept[start:stop]).to(torch.float32).mul_(m)  # in place: the chunk's logits exist once
        norms[start:stop] = _nuclear_norms_of(logits)
        if projections is not None and r_seq_full is not None and r_voc is not None:
            projected = r_seq_full[:, keep] @ (logits @ r_voc)
            projections[start:stop] = projected.reshape(stop - start, -1)
        del logits
    return norms, projections


def _nuclear_norms_of(logits: Tensor) -> Tensor:
    """Nuclear norms of explicit [b, L, V] logits via the float64 Gram of the smaller side.

    Faster than svdvals on a wide L x V matrix (one L^2 V product instead of a bidiagonalisation), and the
    Gram is accumulated over vocabulary chunks so no float64 copy of the whole logits tensor exists.
    """
    b, length, vocab = logits.shape
    if b == 0 or length == 0:
        return logits.new_zeros(b)
    if length <= vocab:
        squared = torch.zeros(b, length, length, dtype=torch.float64, device=logits.device)
        for start in range(0, vocab, _VOCAB_CHUNK):
            part = logits[..., start : start + _VOCAB_CHUNK].to(torch.float64)
            squared.baddbmm_(part, part.transpose(1, 2))
    else:
        z = logits.to(torch.float64)
        squared = z.transpose(1, 2) @ z
    return _sum_sqrt_eigvals(squared).to(torch.float32)


def _sum_sqrt_eigvals(squared: Tensor) -> Tensor:
    with _serial_cpu_lapack(squared.device):
        eigenvalues = torch.linalg.eigvalsh(squared)
    # Rounding leaves eigenvalues of a PSD matrix slightly negative; they are zeros, not imaginary singular values.
    return eigenvalues.clamp_min(0).sqrt().sum(-1)


@contextmanager
def _serial_cpu_lapack(device: torch.device):
    """One intra-op thread for a CPU batch of small eigen-problems.

    MKL's threaded dsyevd synchronises its threads at every step of the tridiagonal reduction; on n <= ~512 that
    costs more than it gains (B=16, n=256 on 2 cores: 41 ms serial, 47 ms threaded) and, when other processes
    share the cores, a descheduled thread stalls the rest: 0.1 s serial vs 0.7-3 s threaded at load 7.
    Restored on exit; the thread count is process-wide, so this assumes no concurrent torch work in other threads.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _drop_padding_columns(hidden: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Remove positions that are padding in every example (exact: they are zero rows of every Z_i)."""
    mask = mask.to(hidden.device)
    keep = (mask != 0).any(0)
    if bool(keep.all()):
        return hidden, mask
    return hidden[:, keep], mask[:, keep]


# --------------------------------------------------------------------------------------------- projection


def projection_matrices(
    vocab_size: int,
    max_len: int,
    r_voc: int = 128,
    r_seq: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """R_seq [r_seq, max_len] ~ N(0, 1/r_seq) and R_voc [vocab_size, r_voc] ~ N(0, 1/r_voc), fixed by `seed`.

    With these variances E ||R_seq Z R_voc||_F^2 = ||Z||_F^2, so ||p_i - p_j|| estimates ||Z_i - Z_j||_F
    (bilinear Johnson-Lindenstrauss). Drawn on the CPU from a private generator (R_seq first, then R_voc)
    so the matrices are identical on every device and never disturb the global RNG that training uses.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    r_seq_matrix = torch.randn(r_seq, max_len, generator=generator, dtype=torch.float32) / math.sqrt(r_seq)
    r_voc_matrix = torch.randn(vocab_size, r_voc, generator=generator, dtype=torch.float32) / math.sqrt(r_voc)
    return r_seq_matrix.to(device or "cpu"), r_voc_matrix.to(device or "cpu")


def head_projection(weight: Tensor, r_voc_matrix: Tensor, chunk_rows: int = _VOCAB_CHUNK) -> Tensor:
    """W^T R_voc [d, r_voc], float32: the vocabulary side of the projection, computed once per job.

    Summed over the vocabulary in float64 (chunked, like `gram_matrix`) so that a sum of ~1e5 random-sign
    terms keeps float32 accuracy in the result.
    """
    vocab, d = weight.shape
    out = torch.zeros(d, r_voc_matrix.shape[1], dtype=torch.float64, device=weight.device)
    r_voc_matrix = r_voc_matrix.to(weight.device)
    for start in range(0, vocab, chunk_rows):
        out.addmm_(
            weight[start : start + chunk_rows].detach().to(torch.float64).T,
            r_voc_matrix[start : start + chunk_rows].to(torch.float64),
        )
    return out.to(torch.float32)


def project(hidden: Tensor, mask: Tensor, w_proj: Tensor, r_seq_matrix: Tensor) -> Tensor:
    """p_i = vec(R_seq[:, :L] (m_i * H_i) (W^T R_voc)) -> [B, r_seq * r_voc], float32, without logits.

    Using only the first L columns of R_seq is the same as zero-padding Z_i to max_len rows.
    """
    batch, length, _ = hidden.shape
    _check_length(length, r_seq_matrix)
    h = hidden.to(torch.float32) * mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
    right = h @ w_proj.to(device=hidden.device, dtype=torch.float32)
    projected = r_seq_matrix[:, :length].to(device=hidden.device, dtype=torch.float32) @ right
    return projected.reshape(batch, -1)


def _check_length(length: int, r_seq_matrix: Tensor) -> None:
    if length > r_seq_matrix.shape[1]:
        raise ValueError(f"sequence length {length} exceeds the projection's max_len {r_seq_matrix.shape[1]}")


# ----------------------------------------------------------------------------------------- memory buffer


class MemoryBuffer:
    """FIFO ring buffer of the projections of selected examples (inter-sample diversity: mean distance to them).

    Stored in float64 with each row's squared norm kept alongside: `mean_distances` then needs one small matmul
    per step and no temporary copy of the buffer (8 MiB at the default 1024 x 1024).
    """

    def __init__(self, capacity: int, dim: int, device: torch.device | str | None = None):
        if capacity < 1 or dim < 1:
            raise ValueError("capacity and dim must be positive")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.storage = torch.zeros(self.capacity, self.dim, dtype=torch.float64, device=device)
        self.sq_norms = torch.zeros(self.capacity, dtype=torch.float64, device=device)
        self.ptr = 0  # next slot to write; the oldest entry once the buffer is full
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, vectors: Tensor) -> None:
        vectors = vectors.detach().reshape(-1, self.dim)
        n = vectors.shape[0]
        if n == 0:
            return
        # Pushing more than `capacity` at once keeps the newest ones, exactly as pushing them one by one would;
        # writing all n would send several to one slot, where the surviving value is unspecified on CUDA.
        skip = max(0, n - self.capacity)
        slots = (self.ptr + skip + torch.arange(n - skip, device=self.storage.device)) % self.capacity
        rows = vectors[skip:].to(device=self.storage.device, dtype=torch.float64)
        self.storage[slots] = rows
        self.sq_norms[slots] = (rows * rows).sum(-1)
        self.ptr = (self.ptr + n) % self.capacity
        self.count = min(self.capacity, self.count + n)

    def vectors(self) -> Tensor:
        """Stored vectors, oldest first."""
        if self.count < self.capacity:
            return self.storage[: self.count]
        return torch.roll(self.storage, -self.ptr, dims=0)

    def mean_distances(self, p: Tensor) -> Tensor:
        """Mean Euclidean distance from each row of p [B, dim] to the stored vectors -> [B] float32; 0 while empty.

        Expanded form ||a||^2 + ||b||^2 - 2 a.b in float64: one matmul, and the cancellation that makes this form
        unreliable in float32 for nearby points costs only ~1e-8 of the vector norms in float64.
        """
        if self.count == 0:
            return torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        a = p.detach().to(device=self.storage.device, dtype=torch.float64)
        squared = (a * a).sum(-1, keepdim=True) + self.sq_norms[: self.count] - 2.0 * (a @ self.storage[: self.count].T)
        return squared.clamp_min(0).sqrt().mean(-1).to(device=p.device, dtype=torch.float32)

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "dim": self.dim,
            "ptr": self.ptr,
            "count": self.count,
            "storage": self.storage.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity or int(state["dim"]) != self.dim:
            raise ValueError(
                f"memory buffer state is {state['capacity']} x {state['dim']}, this buffer is {self.capacity} x {self.dim}"
            )
        self.storage.copy_(state["storage"].to(torch.float64))
        self.sq_norms = (self.storage * self.storage).sum(-1)
        self.ptr = int(state["ptr"])
        self.count = int(state["count"])


# ---------------------------------------------------------------------------------- loss and gradient norm


class TokenStatistics(NamedTuple):
    loss: Tensor  # [B] mean next-token cross-entropy over label positions (0 where there are none)
    grad_norm: Tensor  # [B] ||softmax(Z) - onehot(y)||_F over label positions = ||d(summed CE)/dZ||_F
    tokens: Tensor  # [B] number of label positions (long)


def token_statistics(
    hidden: Tensor,
    mask: Tensor,
    labels: Tensor,
    head_weight: Tensor | None,
    chunk_size: int = 1024,
    head_fn: LogitsFn | None = None,
    ignore_index: int = -100,
) -> TokenStatistics:
    """Per-example mean token loss and gradient-norm proxy, shifted like a HF causal LM (position t predicts t+1).

    A position counts when its target label is not `ignore_index` and the predicting position is a real token
    (for right-padded batches with -100 on padding, as `uds.data.collate` makes, that is exactly HF's loss).
    Only counted positions are evaluated, `chunk_size` of them at a time, so at most chunk_size x V logits exist.
    Logits come from `head_fn(h)` if given (it must return a new tensor: it is overwritten), else h @ head_weight^T.
    """
    batch, length, _ = hidden.shape
    device = hidden.device
    loss_sum = torch.zeros(batch, dtype=torch.float64, device=device)
    grad_sq = torch.zeros(batch, dtype=torch.float64, device=device)
    tokens = torch.zeros(batch, dtype=torch.long, device=device)
    if length >= 2:
        targets = labels[:, 1:].to(device)
        valid = (targets != ignore_index) & (mask[:, :-1].to(device) != 0)
        rows, cols = valid.nonzero(as_tuple=True)
        if head_fn is None and head_weight is None:
            raise ValueError("token_statistics needs head_weight or head_fn")
        weight = None if head_weight is None else head_weight.detach().to(device=device, dtype=torch.float32)
        for start in range(0, rows.numel(), max(1, chunk_size)):
            r, c = rows[start : start + chunk_size], cols[start : start + chunk_size]
            h = hidden[r, c]
            logits = (head_fn(h) if head_fn is not None else h.to(torch.float32) @ _present(weight).T).to(torch.float32)
            y = targets[r, c].unsqueeze(-1)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            direct_loss = (lse - logits.gather(-1, y)).squeeze(-1)
            # For confident tokens (p_y -> 1) both the loss and ||p - e_y|| are tiny differences from p_y = 1, which
            # float32 cannot resolve near 1; rest = sum_{v != y} p_v is a sum of small positive terms and can.
            # So ||p - e_y||^2 = rest^2 + sum_{v != y} p_v^2 (not sum p^2 - 2 p_y + 1, which cancels to noise),
            # and loss = -log1p(-rest) where p_y > 1/2. The softmax reuses the logits' storage: one chunk x V buffer.
            probs = logits.sub_(lse).exp_()
            probs.scatter_(-1, y, 0.0)
            rest = probs.sum(-1)
            others_sq = probs.pow_(2).sum(-1)
            token_loss = torch.where(rest < 0.5, -torch.log1p(-rest.clamp_max(0.5)), direct_loss).clamp_min(0)
            loss_sum.index_add_(0, r, token_loss.to(torch.float64))
            grad_sq.index_add_(0, r, (rest.square() + others_sq).to(torch.float64))
            tokens.index_add_(0, r, torch.ones_like(r))
            del logits, probs
    mean_loss = loss_sum / tokens.clamp_min(1)
    return TokenStatistics(mean_loss.to(torch.float32), grad_sq.sqrt().to(torch.float32), tokens)


# ---------------------------------------------------------------------------------------------------- alpha

# The official script's alpha, on its own (unnormalised FastJL) distance scale.
OFFICIAL_ALPHA = 1.5e-3


def official_distance_scale(vocab_size: int, max_len: int) -> float:
    """How many times larger the official FastJL distances are than the Frobenius distances ours estimate.

    The official projector multiplies by random signs, takes the real part of an unnormalised FFT and keeps
    r random coefficients scaled by sqrt(n / r), once over the vocabulary (n = V) and once over the zero-padded
    sequence (n = max_len). An unnormalised FFT coefficient of a sign-randomised vector x has E|X_j|^2 = ||x||^2
    and its real part half of that, so each side multiplies squared norms by n / 2 in expectation: distances grow
    by sqrt(V * max_len) / 2 (tested against a port of the official projector). Two small biases of theirs are
    left out: the coefficients j = 0 and n / 2 are real (+2 / n), and the first sequence position always has
    cosine 1 (+ its share of the energy, about 1 / L): together a few percent at L = 32, nothing at L = 512.
    """
    return math.sqrt(vocab_size * max_len) / 2.0


def paper_alpha(vocab_size: int, max_len: int) -> float:
    """The official alpha (1.5e-3) in our normalised units: alpha * v must weigh the same in the total score."""
    return OFFICIAL_ALPHA * official_distance_scale(vocab_size, max_len)


class AutoAlpha:
    """alpha = std(u) / std(v) within selection groups, pooled over the last `window` groups (this one included).

    Selection only compares candidates of one group, so what must balance is the spread of u and of alpha * v
    inside a group: each group's values are centred on the group's mean before pooling. Pooling raw values
    instead would measure the spread between groups (mostly their lengths, under length grouping), which no
    selection ever sees. Groups scored with an empty buffer (v all 0) are left out of the v pool. While v has no
    spread (empty buffer, or spread below 1e-6 of its magnitude) alpha is 0: a constant v cannot change the
    ranking, and multiplying its rounding noise by a huge alpha would.
    """

    def __init__(self, window: int = 256):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = int(window)
        self._u: deque[Tensor] = deque(maxlen=self.window - 1)
        self._v: deque[Tensor] = deque(maxlen=self.window - 1)

    def value(self, u: Tensor, v: Tensor | None = None) -> float:
        """The alpha to use for this group's candidates (u, v), given the previous window - 1 groups."""
        us = torch.cat([*self._u, _centred64(u)])
        vs = torch.cat([*self._v, _centred64(v)])
        if vs.numel() < 2 or us.numel() < 2:
            return 0.0
        su = float(us.square().mean().sqrt())
        sv = float(vs.square().mean().sqrt())
        scale = float(_flat64(v).abs().max()) if v is not None and v.numel() else 0.0
        if not (math.isfinite(su) and math.isfinite(sv)) or sv <= 1e-6 * scale or sv == 0.0:
            return 0.0
        return su / sv

    def update(self, u: Tensor, v: Tensor | None = None) -> None:
        """Record one group's candidate values; v = None for a group scored against an empty buffer."""
        if u.numel() < 2:
            return  # a lone candidate has no within-group spread; recording its 0 would shrink the pooled one
        self._u.append(_centred64(u))
        self._v.append(_centred64(v))

    def state_dict(self) -> dict:
        return {"window": self.window, "u": [t.clone() for t in self._u], "v": [t.clone() for t in self._v]}

    def load_state_dict(self, state: dict) -> None:
        self.window = int(state["window"])
        self._u = deque((t.to(torch.float64).cpu() for t in state["u"]), maxlen=self.window - 1)
        self._v = deque((t.to(torch.float64).cpu() for t in state["v"]), maxlen=self.window - 1)


def _centred64(values: Tensor | None) -> Tensor:
    flat = _flat64(values)
    return flat - flat.mean() if flat.numel() else flat


def _present(value: Tensor | None) -> Tensor:
    if value is None:
        raise ValueError("a required tensor is missing")
    return value


def _flat64(values: Tensor | None) -> Tensor:
    # History lives on the CPU in float64: a few thousand scalars, and it round-trips checkpoints bit-exactly.
    if values is None:
        return torch.zeros(0, dtype=torch.float64)
    return values.detach().reshape(-1).to(device="cpu", dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ summary


def summary(values: Tensor | None) -> dict[str, float] | None:
    """{"mean", "std", "min", "max"} as Python floats (population std); None for None or no values."""
    if values is None or values.numel() == 0:
        return None
    x = values.detach().reshape(-1).to(torch.float64)
    return {"mean": float(x.mean()), "std": float(x.std(correction=0)), "min": float(x.min()), "max": float(x.max())}

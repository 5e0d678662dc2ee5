"""A test-only reference that follows the arithmetic of the paper's official code (UDSamplingTrainer.py), in our words.

What it keeps of theirs, on purpose: utility as the sum of `svdvals` of the explicit logits; the FastJL projector
(random signs, the real part of an unnormalised FFT, r random coefficients scaled by sqrt(n / r), over the
vocabulary and then over the zero-padded sequence); a FIFO queue of the selected projections; per group the top
k of u + alpha * mean cdist to the queue, then the picks pushed. What it leaves out: CUDA, fp16, printing, the
Trainer. Used only to check that our logits-free, normalised implementation selects what theirs would.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class FastJLReference:
    """The official projector: (B, T, V) logits -> (B, r_seq, r_voc), T being the padded max length."""

    def __init__(self, max_len: int, vocab_size: int, r_seq: int, r_voc: int, generator: torch.Generator):
        self.max_len, self.vocab_size = max_len, vocab_size
        self.signs_voc = torch.randint(0, 2, (vocab_size,), generator=generator).to(torch.float64) * 2 - 1
        self.index_voc = torch.randint(0, vocab_size, (r_voc,), generator=generator)
        self.signs_seq = torch.randint(0, 2, (max_len,), generator=generator).to(torch.float64) * 2 - 1
        self.index_seq = torch.randint(0, max_len, (r_seq,), generator=generator)
        self.scale_voc = math.sqrt(vocab_size / r_voc)
        self.scale_seq = math.sqrt(max_len / r_seq)

    def project(self, logits: Tensor) -> Tensor:
        x = logits.to(torch.float64)
        if x.shape[1] < self.max_len:  # zero rows up to the max length, as the official code pads
            x = torch.cat([x, x.new_zeros(x.shape[0], self.max_len - x.shape[1], x.shape[2])], dim=1)
        x = torch.fft.fft(x * self.signs_voc, dim=-1).real[..., self.index_voc] * self.scale_voc
        x = torch.fft.fft(x * self.signs_seq.view(1, -1, 1), dim=1).real[:, self.index_seq, :] * self.scale_seq
        return x.reshape(x.shape[0], -1)


class OfficialSelectorReference:
    """Per group: utility = sum of singular values of the logits, diversity = mean distance to the queue."""

    def __init__(self, projector: FastJLReference, alpha: float, k: int, queue_size: int):
        self.projector, self.alpha, self.k, self.queue_size = projector, alpha, k, queue_size
        self.queue: list[Tensor] = []

    def utility(self, logits: Tensor) -> Tensor:
        return torch.linalg.svdvals(logits.to(torch.float64)).sum(-1)

    def select(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(picked indices, utility, diversity) for one group of logits (B, L, V)."""
        u = self.utility(logits)
        p = self.projector.project(logits)
        if self.queue:
            v = torch.cdist(p, torch.stack(self.queue)).mean(-1)
        else:
            v = torch.zeros_like(u)
        picked = torch.topk(u + self.alpha * v, self.k).indices
        for row in p[picked]:
            self.queue.append(row)
        self.queue = self.queue[-self.queue_size :]
        return picked, u, v

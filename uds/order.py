"""Candidate order: which dataset rows make up each selection group, and in which order groups are drawn.

Derived from (seed, epoch) alone, so the data position of a resumed run is just its step number, and every loop
that trains with selection (`uds.trainer` and the transformers integration) draws the same groups.
"""

from __future__ import annotations

import torch

from uds.config import group_count


def epoch_groups(
    lengths: list[int], candidate_batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The selection groups of one epoch, as lists of dataset rows, in the order they are drawn.

    With `group_by_length` (transformers' length-grouped sampler, as the official script runs): shuffle, cut into
    mega-batches of up to 50 groups, sort each by length (longest first), cut into groups of B, and shuffle the
    groups' order. Then a group holds near-equal lengths, and the nuclear norm, which grows with the number of
    rows, compares examples rather than lengths. Only the epoch's last group (before the shuffle) may be partial.
    """
    n = len(lengths)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    size = candidate_batch_size
    if group_by_length:
        n_groups = group_count(n, size)
        # At least 4 mega-batches when the data allows it (as transformers does): one sorted mega-batch would make
        # the epoch's groups a fixed function of length.
        megabatch = size * max(1, min(50, n_groups // 4))
        order = [
            row
            for start in range(0, n, megabatch)
            for row in sorted(order[start : start + megabatch], key=lambda r: -lengths[r])
        ]
    groups = [order[start : start + size] for start in range(0, n, size)]
    if group_by_length:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    return groups


class GroupBatchSampler:
    """A batch sampler (for a torch DataLoader) that yields the selection groups of each epoch as lists of rows."""

    def __init__(self, lengths: list[int], candidate_batch_size: int, seed: int, group_by_length: bool):
        self.lengths = lengths
        self.candidate_batch_size = candidate_batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from epoch_groups(self.lengths, self.candidate_batch_size, self.seed, self.epoch, self.group_by_length)

    def __len__(self) -> int:
        return group_count(len(self.lengths), self.candidate_batch_size)

"""One optimizer step's groups over several processes (DDP under torchrun / accelerate launch), with the selection
of one process.

A step is the `G * W` consecutive groups of the epoch's order (G: `gradient_accumulation_steps` per process,
W: processes), exactly the groups one process with `gradient_accumulation_steps = G * W` draws for that step.
Each rank loads a contiguous share of them (`StepShareSampler`), measures its share, and every rank gathers all
the step's measures in group order (`gather_step`), so every rank runs the same sequential selection with the same
memory buffer and then trains the picks of its own groups.

The dataloader is this rank's already: accelerate's own sharding (every W-th batch, the epoch's tail padded by
wrapping around to its first batches) is not applied on top, it would train some groups twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from uds import distributed
from uds.config import group_count
from uds.distributed import World
from uds.order import GroupBatchSampler
from uds.selectors import Measures


class Filler(int):
    """A dataset row standing in a slot where this rank has no group of the step (the epoch's last step can have
    fewer groups than `G * W`): every rank runs the same number of micro-batches, which DDP needs, and the filler
    trains with weight 0, so it adds nothing to the gradient."""


class StepShareSampler(GroupBatchSampler):
    """This rank's share of each optimizer step's groups, as a batch sampler.

    Each step's groups (`groups_per_step = G * W` of the epoch's order, fewer at its end) are split into contiguous
    shares in rank order (`uds.distributed.share`), so concatenating the ranks' shares gives the step's groups in
    order. Every rank gets `ceil(groups / W)` slots a step; a slot without a group holds a `Filler`. In one
    process this is `GroupBatchSampler` itself.
    """

    def __init__(
        self,
        lengths: list[int],
        candidate_batch_size: int,
        seed: int,
        group_by_length: bool,
        groups_per_step: int,
        world: World,
    ):
        super().__init__(lengths, candidate_batch_size, seed, group_by_length)
        self.groups_per_step = groups_per_step
        self.world = world

    def __iter__(self):
        groups = list(super().__iter__())
        for start in range(0, len(groups), self.groups_per_step):
            step = groups[start : start + self.groups_per_step]
            mine = distributed.share(step, self.world)
            yield from mine
            for _ in range(math.ceil(len(step) / self.world.size) - len(mine)):
                yield [Filler(step[0][0])]

    def __len__(self) -> int:
        full, rest = divmod(group_count(len(self.lengths), self.candidate_batch_size), self.groups_per_step)
        return full * math.ceil(self.groups_per_step / self.world.size) + math.ceil(rest / self.world.size)


@dataclass
class StepCandidates:
    """A step's candidates (one rank's share, or all of them after `gather_step`), group after group."""

    rows: list[list[int]]  # dataset rows of each group
    lengths: list[int]  # token count of each candidate (the length diagnostic)
    loss_tokens: list[int]  # loss-carrying tokens of each candidate (the step's loss weights)
    measures: Measures

    @property
    def sizes(self) -> list[int]:
        return [len(rows) for rows in self.rows]


def gather_step(
    local: StepCandidates, world: World, measured: bool, device: torch.device
) -> tuple[StepCandidates, int]:
    """Every rank's candidates in rank order (= the step's group order), on every rank, and the index of this
    rank's first group among them. `measured` False (random, full): the measures carry nothing to gather. The
    gathered measures go back on `device`, where one process selects: the selection's arithmetic is then the
    same as one process's."""
    if not world.distributed:
        return local, 0
    parts: list[StepCandidates | None] = [None] * world.size
    dist.all_gather_object(parts, replace(local, measures=Measures(local.measures.count)))
    shares = [part for part in parts if part is not None]
    total = sum(part.measures.count for part in shares)
    measures = distributed.gather_measures(local.measures, world, device) if measured else Measures(total)
    first_group = sum(len(part.rows) for part in shares[: world.rank])
    step = StepCandidates(
        rows=[rows for part in shares for rows in part.rows],
        lengths=[length for part in shares for length in part.lengths],
        loss_tokens=[count for part in shares for count in part.loss_tokens],
        measures=measures,
    )
    return step, first_group

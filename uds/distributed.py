"""One job over several processes (`torch.distributed`: NCCL on CUDA, gloo on the CPU), with exactly the selection
of one process.

A step's expensive half (the scoring pass: body forward, utility, projection) does not depend on the selector's
memory, so each rank measures its share of the step's candidates; the per-candidate measures (a few KB each) are
gathered to every rank, and every rank then runs the same sequential selection with the same memory, so all ranks
hold the same picks and the same buffer. Each rank trains its share of the picks with the step's exact loss
weights; the LoRA gradients are summed over ranks (`sum_gradients`), so the update is the one-process update up to
the order of float additions.

Everything here is a no-op in a single process: `World.size == 1` takes the one-process path everywhere, so the
trainer has one code path. Processes are started by torchrun's elastic agent (`uds.launch`), which sets the
environment `init_from_env` reads.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from uds.selectors import Measures

T = TypeVar("T")

# A rank waits this long at a collective for the others (rank 0 evaluates and writes checkpoints while they wait).
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one writer (metrics, checkpoints, the adapter)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE


def launched_world() -> World:
    """The world torchrun started this process in (from its environment), before any process group exists."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: torch.device) -> World:
    """Join the job's process group when torchrun started this process (NCCL for CUDA, gloo for the CPU)."""
    world = launched_world()
    if not world.distributed or dist.is_initialized():
        return current_world()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return current_world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share_bounds(count: int, world: World) -> tuple[int, int]:
    """[start, stop) of `world.rank`'s contiguous share of `count` items: sizes differ by at most one, the lower
    ranks taking the extra ones, so concatenating the shares in rank order gives back the items in order."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def share(items: Sequence[T], world: World) -> list[T]:
    start, stop = share_bounds(len(items), world)
    return list(items[start:stop])


def gather_measures(local: Measures, world: World, device: torch.device | str = "cpu") -> Measures:
    """Every rank's measures of its share, concatenated in rank order, on every rank, on `device`: where one
    process would hold them, so the selection's arithmetic runs where it runs in one process."""
    if not world.distributed:
        return local
    parts: list[Measures | None] = [None] * world.size
    dist.all_gather_object(parts, _moved(local, "cpu"))
    # A rank with no share (fewer chunks than ranks) sent an empty part: it carries no tensors to concatenate.
    return _moved(Measures.concat([part for part in parts if part is not None and part.count > 0]), device)


def _moved(measures: Measures, device: torch.device | str) -> Measures:
    def move(values: torch.Tensor | None) -> torch.Tensor | None:
        return None if values is None else values.detach().to(device)

    return Measures(measures.count, move(measures.utility), move(measures.projection), move(measures.statistic))


def sum_gradients(parameters: Sequence[torch.nn.Parameter], extra: Sequence[float], world: World) -> list[float]:
    """Sum the gradients of `parameters` and the numbers `extra` over all ranks, in one collective; returns the
    summed `extra`. A parameter without a gradient (this rank trained nothing) counts as zeros."""
    if not world.distributed:
        return list(extra)
    device = parameters[0].device
    flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device) for p in parameters]
    # One step's bookkeeping numbers (loss, token counts) stay far below float32's exact integers.
    payload = torch.cat([torch.cat(flat).float(), torch.tensor(list(extra), dtype=torch.float32, device=device)])
    dist.all_reduce(payload, op=dist.ReduceOp.SUM)
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        summed = payload[offset : offset + size].view(parameter.shape).to(parameter.dtype)
        if parameter.grad is None:
            parameter.grad = summed.clone()
        else:
            parameter.grad.copy_(summed)
        offset += size
    return payload[offset:].tolist()


def broadcast_parameters(parameters: Sequence[torch.nn.Parameter], world: World) -> None:
    """Rank 0's values of `parameters` on every rank (the same start, whatever each rank's initialisation drew)."""
    if not world.distributed:
        return
    with torch.no_grad():
        for parameter in parameters:
            dist.broadcast(parameter.data, src=0)


def agree(flag: bool, world: World) -> bool:
    """Rank 0's `flag` on every rank: decisions only rank 0 can make (stop: cancel, time limit, shutdown)."""
    if not world.distributed:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()

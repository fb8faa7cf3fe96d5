"""Evaluation over several processes (``torchrun``): sharding without duplicates, exact sums.

``torch.utils.data.DistributedSampler`` pads the index list by repeating samples so every rank
gets the same count; for a score that would count some images twice. Here rank ``r`` of ``w``
takes ``ids[r::w]``: every id exactly once, shard sizes differing by at most one. The confusion
matrices are int64 and summed with ``all_reduce`` — integer addition is exact and
order-independent, so the metrics are bit-identical to a single-process run.

Backends: NCCL when the ranks evaluate on CUDA, gloo on CPUs. A process started without
torchrun's environment (``WORLD_SIZE`` unset or 1) is a world of one and never touches
``torch.distributed``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

from port.errors import PortError

__all__ = ["DistributedError", "DistContext", "setup", "teardown", "shard", "all_reduce_sum",
           "all_reduce_max", "all_gather_ints", "gather_objects"]

T = TypeVar("T")


class DistributedError(PortError, RuntimeError):
    """A torchrun environment this run cannot join (a user's setting: one line, exit 1)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the evaluation: rank, world size, backend, comm device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    comm_device: str = "cpu"  # where collective tensors live: cuda:<local_rank> for NCCL
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def setup(device_type: str, *, init_method: str | None = None, rank: int | None = None,
          world_size: int | None = None) -> DistContext:
    """Join the process group torchrun describes (or the one given, for tests).

    ``device_type`` is ``"cuda"`` or ``"cpu"``: it picks NCCL or gloo and the comm device.
    """
    world = _env_int("WORLD_SIZE", 1) if world_size is None else world_size
    rank = _env_int("RANK", 0) if rank is None else rank
    local_rank = _env_int("LOCAL_RANK", rank)
    if world <= 1:
        return DistContext()
    if not 0 <= rank < world:
        raise DistributedError(f"environment variable RANK={rank} is outside WORLD_SIZE={world} "
                               f"(ranks 0 to {world - 1}; torchrun sets both)")
    backend = "nccl" if device_type == "cuda" else "gloo"
    comm_device = f"cuda:{local_rank}" if backend == "nccl" else "cpu"
    owns = not dist.is_initialized()
    if owns:
        try:
            dist.init_process_group(backend, init_method=init_method or "env://",
                                    rank=rank, world_size=world)
        except (ValueError, RuntimeError) as err:  # env:// without MASTER_ADDR/PORT, a bad port
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise DistributedError(f"cannot join the {backend} process group of WORLD_SIZE={world} "
                                   f"(start several processes with torchrun): {first}") from None
    return DistContext(rank, world, local_rank, backend, comm_device, owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard(ids: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``ids``: every ``world_size``-th id from ``rank``, no padding."""
    if not 0 <= rank < world_size:
        raise DistributedError(f"rank {rank} outside a world of size {world_size}")
    return list(ids[rank::world_size])


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (a new tensor on its device)."""
    if not ctx.is_distributed:
        return tensor.clone()
    buf = tensor.detach().to(ctx.comm_device, copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def all_reduce_max(value: int, ctx: DistContext) -> int:
    """The largest ``value`` over all ranks (a stop request on any rank stops them all)."""
    if not ctx.is_distributed:
        return int(value)
    buf = torch.tensor([int(value)], dtype=torch.int64, device=ctx.comm_device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return int(buf.item())


def all_gather_ints(value: int, ctx: DistContext) -> list[int]:
    """``value`` of every rank, in rank order."""
    if not ctx.is_distributed:
        return [int(value)]
    mine = torch.tensor([int(value)], dtype=torch.int64, device=ctx.comm_device)
    out = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def gather_objects(obj: T, ctx: DistContext) -> list[T]:
    """``obj`` of every rank, in rank order (small JSON-like records: the skipped items)."""
    if not ctx.is_distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out

"""Running one command on several processes with PyTorch's own runtime (torchrun sets the environment).

Work is split by whole batches of sample indices, dealt round-robin: batch k (indices
[k*B, (k+1)*B)) runs on rank k mod W. Every batch therefore has the same composition whatever the
world size W, so per-sample results are bitwise those of a single process on the same hardware.
Rank 0 gathers the pieces in index order and alone writes files and prints reports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or any launcher setting WORLD_SIZE > 1) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """The RANK torchrun gave this process (0 when not launched by it); known before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def current() -> World:
    """The world of the initialised process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU); return this rank's device.

    On CUDA each process takes the GPU of its LOCAL_RANK. Without torchrun nothing changes.
    """
    if not launched():
        return current(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return current(), device


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def batches(indices: range, batch_size: int) -> list[range]:
    """Consecutive batches of at most ``batch_size`` indices covering ``indices``."""
    return [range(s, min(s + batch_size, indices.stop)) for s in range(indices.start, indices.stop, batch_size)]


def my_batches(indices: range, batch_size: int, world: World) -> list[range]:
    """The batches this rank computes: batch k goes to rank k mod size."""
    return batches(indices, batch_size)[world.rank :: world.size]


def gather_batches(local: torch.Tensor, indices: range, batch_size: int, world: World) -> torch.Tensor:
    """Rows of every rank (each the concatenation of its ``my_batches``) reassembled in index order.

    Every rank receives the whole result; on one process ``local`` is returned as it is.
    """
    if world.size == 1:
        return local
    all_batches = batches(indices, batch_size)
    owned = [all_batches[r :: world.size] for r in range(world.size)]
    counts = [sum(len(b) for b in mine) for mine in owned]
    if local.shape[0] != counts[world.rank]:
        raise RuntimeError(f"rank {world.rank} holds {local.shape[0]} rows, expected {counts[world.rank]}")
    width = max(counts)
    comm = _comm_device()
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=comm)
    padded[: local.shape[0]] = local.to(comm)
    pieces = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(pieces, padded)
    out = torch.empty((len(indices), *local.shape[1:]), dtype=local.dtype)
    for rank, mine in enumerate(owned):
        row = 0
        for batch in mine:
            out[batch.start - indices.start : batch.stop - indices.start] = pieces[rank][row : row + len(batch)].cpu()
            row += len(batch)
    return out


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum of ``t`` over ranks (a copy on t's device; ``t`` itself on one process)."""
    if world.size == 1:
        return t
    buf = t.detach().to(_comm_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on at least one (so all ranks take the same branch)."""
    if world.size == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([int(flag)], dtype=torch.int64), world).item())


def my_rows(count: int, world: World) -> range:
    """This rank's contiguous block of ``count`` rows (blocks of ceil(count / size); the last ones may be short
    or empty)."""
    per = -(-count // world.size)
    return range(min(world.rank * per, count), min((world.rank + 1) * per, count))


def sum_gradients(module: torch.nn.Module, world: World) -> None:
    """Replace every parameter's gradient by its sum over ranks (a missing gradient counts as zero)."""
    if world.size == 1:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(all_reduce_sum(p.grad, world))


def gather_objects(obj: object, world: World) -> list[object]:
    """``obj`` of every rank (picklable; CPU tensors inside), in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    """Wait for every rank (no-op on one process)."""
    if world.size > 1:
        dist.barrier()


def teardown(completed: bool) -> None:
    """Leave the process group at the end of a command; after a completed command wait for every rank first,
    so no rank tears down its connections while another still uses them (a failed rank just leaves)."""
    if dist.is_available() and dist.is_initialized():
        if completed:
            dist.barrier()
        dist.destroy_process_group()

"""The process group of data-parallel training: init/teardown, rank/world, the shard rule, collectives.

Built on ``torch.distributed`` (gloo on CPU, NCCL on CUDA), initialised from the environment that
``torchrun`` (``torch.distributed.run``) sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT. Without
it the run is one process and every function here is the identity (no collective, no cost).

The shard rule (``rows``): the global batch of n examples is cut into ``world`` contiguous pieces in
rank order, the first ``n mod world`` one example longer (``torch.tensor_split``); rank r's gradient is
weighted by its share ``w_r = n_r / n`` before the SUM all-reduce, so the reduced gradient of a mean loss
is the mean over the global batch, exactly the 1-process gradient up to float summation order. A batch
smaller than the world is not cut: every rank takes all of it with weight 1 / world (same result).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist


@dataclass
class Dist:
    """This process's place in the group. ``weight``: its share of the current step's global batch
    (set by the loop when it cuts the batch; every reduction of gradients of this step uses it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = "none"
    weight: float = 1.0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the shard rule -----------------------------------------------------------------------------
    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """[lo, hi) of ``rank``'s rows of an n-row global batch (all rows when n < world)."""
        r = self.rank if rank is None else rank
        if self.world == 1 or n < self.world:
            return 0, n
        q, extra = divmod(n, self.world)
        lo = r * q + min(r, extra)
        return lo, lo + q + (r < extra)

    def rows(self, n: int) -> slice:
        return slice(*self.bounds(n))

    def share(self, n: int) -> float:
        """This rank's gradient weight for an n-row batch cut by ``rows``; the weights sum to 1."""
        if self.world == 1:
            return 1.0
        if n < self.world:
            return 1.0 / self.world
        lo, hi = self.bounds(n)
        return (hi - lo) / n

    # -- collectives (identity on one process) --------------------------------------------------------
    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place SUM all-reduce; every rank ends with the same bits (ring reduction, then broadcast)."""
        if self.active:
            tdist.all_reduce(t)
        return t

    def any_(self, flags: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of a bool tensor over the ranks (a new tensor; the input on one process)."""
        if not self.active:
            return flags
        return self.sum_(flags.to(torch.int32)) > 0

    def reduce_grads(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """sum_r w_r g_r of per-rank gradients of this step (one flat all-reduce); new tensors."""
        if not self.active or not grads:
            return grads
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.weight)
        self.sum_(flat)
        return [c.view_as(g) for c, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def gather_rows(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """The n-row global tensor from every rank's ``rows(n)`` piece (rank order), on every rank."""
        if not self.active or n < self.world:
            return t
        sizes = [hi - lo for lo, hi in (self.bounds(n, r) for r in range(self.world))]
        pad = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
        pad[: t.shape[0]] = t
        parts = [torch.empty_like(pad) for _ in sizes]
        tdist.all_gather(parts, pad)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (others pass anything)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_state(self, state: Any) -> Any:
        """Rank 0's state dict on every rank, through ``torch.save`` bytes loaded to the CPU: what a
        checkpoint resume loads, so every ``load_state_dict`` already accepts it."""
        if not self.active:
            return state
        data = None
        if self.is_main:
            buf = io.BytesIO()
            torch.save(state, buf)
            data = buf.getvalue()
        data = self.broadcast_object(data)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


_CURRENT = Dist()


def current() -> Dist:
    """This process's ``Dist`` (world 1 unless ``init`` joined a group)."""
    return _CURRENT


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: str) -> Dist:
    """Join the group torchrun set up (env:// rendezvous): NCCL when the run trains on CUDA, else gloo.
    On CUDA each process takes GPU ``LOCAL_RANK``. One process: nothing happens."""
    global _CURRENT
    if not launched() or tdist.is_initialized():
        return _CURRENT
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    tdist.init_process_group(backend)
    _CURRENT = Dist(tdist.get_rank(), tdist.get_world_size(), local, backend)
    return _CURRENT


def teardown() -> None:
    global _CURRENT
    if tdist.is_initialized():
        tdist.destroy_process_group()
    _CURRENT = Dist()

"""Batches as index gathers over tensors already on the training device.

An epoch is a random permutation of the task's active example indices (drawn from an explicit
generator); a batch is one gather of uint8 inputs, the task's domain transform, and the batched
training transform. The sampler's position (epoch permutation and cursor) is part of the training state,
so a resumed run sees exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from typing import Iterator

import torch

from sparsecl.data.batch import Batch
from sparsecl.data.stream import Stream, Task
from sparsecl.data.transforms import BatchTransform


class EpochSampler:
    """Shuffled minibatches of indices over a task's (possibly shrinking) set of active examples."""

    def __init__(self, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.generator = generator
        self.drop_last = drop_last
        self.order: torch.Tensor | None = None  # this epoch's permutation of the active indices
        self.cursor = 0  # batches already handed out from ``order``

    def num_batches(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def start_epoch(self, active: torch.Tensor) -> None:
        perm = torch.randperm(active.numel(), generator=self.generator, device=self.generator.device)
        self.order = active[perm.to(active.device)]
        self.cursor = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        assert self.order is not None, "start_epoch() first"
        n = self.num_batches(self.order.numel())
        while self.cursor < n:
            i = self.cursor
            self.cursor += 1
            yield self.order[i * self.batch_size : (i + 1) * self.batch_size]

    def state_dict(self) -> dict:
        return {"order": self.order, "cursor": self.cursor, "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.order, self.cursor = sd["order"], sd["cursor"]
        self.generator.set_state(sd["generator"])


def make_batch(
    stream: Stream, task: Task, idx: torch.Tensor, transform: BatchTransform, generator: torch.Generator
) -> Batch:
    """Gather examples ``idx`` of the training split and build the (x_aug, y, x_raw, idx) batch."""
    ds = stream.dataset  # index_select: the same gather as x[idx], far less overhead (bench_kernels.py --layout)
    x_raw = task.inputs(ds.x_train.index_select(0, idx))
    return Batch(transform.train(x_raw, generator), ds.y_train.index_select(0, idx), x_raw, idx, task.id)


def eval_batches(
    stream: Stream, task: Task, transform: BatchTransform, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) test batches of one task, normalised, without augmentation."""
    ds = stream.dataset
    for i in range(0, task.test_idx.numel(), batch_size):
        idx = task.test_idx[i : i + batch_size]
        yield transform.test(task.inputs(ds.x_test[idx])), ds.y_test[idx]

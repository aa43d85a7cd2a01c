"""Streams of tasks over one dataset: class-, task- and domain-incremental splits.

A single task (``tasks=1``) is the degenerate stream: ordinary training runs through the same loop.
Scenarios (van de Ven & Tolias 2019, "Three scenarios for continual learning"): Class-IL and Task-IL
share the class split (Task-IL additionally masks the logits outside the example's task at test time); Domain-IL keeps the label space and changes
the input distribution per task (a fixed pixel permutation, or a fixed rotation angle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from sparsecl.data.dataset import ArrayDataset
from sparsecl.registry import Registry


class DomainTransform(Protocol):
    """A deterministic per-task change of the input distribution, on uint8 batches."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Permute:
    """A fixed pixel permutation (shared by all channels), as in Permuted MNIST."""

    perm: torch.Tensor  # int64 [H*W]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        perm = self.perm.to(x.device)
        return x.reshape(b, c, h * w)[:, :, perm].reshape(b, c, h, w)


@dataclass(frozen=True)
class Rotate:
    """A fixed rotation by ``degrees`` about the image centre (bilinear, zero fill), as in Rotated MNIST."""

    degrees: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        a = math.radians(self.degrees)
        theta = torch.tensor(
            [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], device=x.device
        ).expand(b, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class Task:
    """One task of a stream: which classes, which training/test examples, and its input transform."""

    id: int
    classes: tuple[int, ...]
    train_idx: torch.Tensor  # int64 indices into dataset.x_train
    test_idx: torch.Tensor  # int64 indices into dataset.x_test
    domain: DomainTransform | None = None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The task's view of raw uint8 inputs (identity except for Domain-IL)."""
        return x if self.domain is None else self.domain(x)


@dataclass
class Stream:
    """A dataset cut into an ordered list of tasks."""

    dataset: ArrayDataset
    tasks: list[Task]
    scenario: str  # "class-il" | "task-il" | "domain-il"
    class_order: tuple[int, ...] = field(default=())

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def task_of_class(self) -> torch.Tensor:
        """int64 [num_classes]: the task id owning each class (Domain-IL: all zeros)."""
        owner = torch.zeros(self.num_classes, dtype=torch.int64)
        if self.scenario != "domain-il":
            for t in self.tasks:
                owner[list(t.classes)] = t.id
        return owner


StreamBuilder = Callable[[ArrayDataset, int, tuple[int, ...] | None, torch.Generator], Stream]
STREAMS: Registry[StreamBuilder] = Registry("stream")


def _class_order(ds: ArrayDataset, order: tuple[int, ...] | None, g: torch.Generator | None) -> tuple[int, ...]:
    if order is None:
        return tuple(range(ds.num_classes))
    if sorted(order) != list(range(ds.num_classes)):
        raise ValueError(f"class_order must be a permutation of 0..{ds.num_classes - 1}, got {list(order)}")
    return tuple(order)


def split_by_class(ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None, scenario: str) -> Stream:
    """Disjoint class groups of equal size, in ``order`` (natural order 0-1, 2-3, ... when None)."""
    if tasks < 1 or ds.num_classes % tasks:
        raise ValueError(f"tasks={tasks} must divide the {ds.num_classes} classes of {ds.name}")
    order = _class_order(ds, order, None)
    per = ds.num_classes // tasks
    out = []
    for t in range(tasks):
        classes = tuple(order[t * per : (t + 1) * per])
        cls = torch.tensor(classes, device=ds.y_train.device)
        train_idx = torch.isin(ds.y_train, cls).nonzero().flatten()
        test_idx = torch.isin(ds.y_test, cls.to(ds.y_test.device)).nonzero().flatten()
        out.append(Task(t, classes, train_idx, test_idx))
    return Stream(ds, out, scenario, order)


@STREAMS.register("class-il")
def class_il(ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None, g: torch.Generator) -> Stream:
    return split_by_class(ds, tasks, order, "class-il")


@STREAMS.register("task-il")
def task_il(ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None, g: torch.Generator) -> Stream:
    return split_by_class(ds, tasks, order, "task-il")


def _domain_stream(ds: ArrayDataset, tasks: int, make: Callable[[int], DomainTransform | None]) -> Stream:
    all_train = torch.arange(ds.x_train.shape[0], device=ds.y_train.device)
    all_test = torch.arange(ds.x_test.shape[0], device=ds.y_test.device)
    classes = tuple(range(ds.num_classes))
    return Stream(ds, [Task(t, classes, all_train, all_test, make(t)) for t in range(tasks)], "domain-il", classes)


@STREAMS.register("permuted")
def permuted(ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None, g: torch.Generator) -> Stream:
    """Permuted-X: every task, the first included, sees the images under its own fixed random pixel
    permutation (GEM's, mammoth's and Avalanche's protocol)."""
    h, w = ds.input_shape[1:]
    perms = [Permute(torch.randperm(h * w, generator=g)) for _ in range(tasks)]
    return _domain_stream(ds, tasks, lambda t: perms[t])


@STREAMS.register("rotated")
def rotated(ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None, g: torch.Generator) -> Stream:
    """Rotated-X: every task rotates all images by its own fixed angle drawn uniformly from [0, 180)."""
    angles = (torch.rand(tasks, generator=g, dtype=torch.float64) * 180.0).tolist()
    return _domain_stream(ds, tasks, lambda t: Rotate(angles[t]))


def make_stream(
    name: str, ds: ArrayDataset, tasks: int, order: tuple[int, ...] | None = None, seed: int = 0
) -> Stream:
    """Build a stream by name; ``seed`` drives permutations/angles (a generator of its own)."""
    return STREAMS.get(name)(ds, tasks, order, torch.Generator().manual_seed(seed))

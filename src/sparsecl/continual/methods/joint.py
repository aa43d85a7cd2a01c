"""Joint training: every task's data at once, the upper bound of continual-learning tables."""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.continual.base import MethodContext
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.sgd import SGD
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task


@CL_METHODS.register("joint")
class Joint(SGD):
    """Joint (mammoth's ``joint``): tasks before the last are not trained (``train_indices`` -> None); the
    last task trains on the union of all tasks' training examples, so the run still evaluates after every
    task and fills the whole accuracy matrix (rows before the last show the untrained model).

    Domain-IL (Permuted, Rotated): the tasks share their examples and differ by input transform, so the
    union is of (task, example) pairs: task k's example i is index k N + i (N training examples), and
    ``make_batch`` gives each example its own task's view. No masked head: the union spans all classes.
    """

    options: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.domain = ctx.stream.scenario == "domain-il"

    def train_indices(self, task: Task) -> torch.Tensor | None:
        tasks = self.ctx.stream.tasks
        if task.id != tasks[-1].id:
            return None
        if self.domain:
            n = self.ctx.stream.dataset.x_train.shape[0]
            return torch.cat([t.train_idx + k * n for k, t in enumerate(tasks)])
        return torch.cat([t.train_idx for t in tasks]).unique()

    def index_space(self) -> int:
        n = super().index_space()
        return n * self.ctx.stream.num_tasks if self.domain else n

    def make_batch(self, task: Task, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        if not self.domain:
            return super().make_batch(task, idx, generator)
        ds, tasks = self.ctx.stream.dataset, self.ctx.stream.tasks
        n = ds.x_train.shape[0]
        src, which = idx % n, idx // n
        x_raw = ds.x_train.index_select(0, src)
        for k in which.unique().tolist():  # each example in its own task's view
            sel = (which == k).nonzero().flatten()
            x_raw[sel] = tasks[k].inputs(x_raw.index_select(0, sel))
        return Batch(self.ctx.transform.train(x_raw, generator), ds.y_train.index_select(0, src), x_raw, idx, task.id)

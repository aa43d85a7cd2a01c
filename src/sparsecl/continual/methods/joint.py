"""Joint training: every task's data at once, the upper bound of continual-learning tables."""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.continual.base import MethodContext
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.sgd import SGD
from sparsecl.data.stream import Task


@CL_METHODS.register("joint")
class Joint(SGD):
    """Joint (mammoth's ``joint``): tasks before the last are not trained (``train_indices`` -> None); the
    last task trains on the union of all tasks' training examples, so the run still evaluates after every
    task and fills the whole accuracy matrix (rows before the last show the untrained model).

    Not for Domain-IL streams: their tasks share indices and differ by input transform, which a batch of
    the last task cannot apply (a ValueError). No masked head: the union spans all classes.
    """

    options: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        if ctx.stream.scenario == "domain-il":
            raise ValueError("method 'joint' does not support domain-il streams (tasks differ by input)")
        super().__init__(model, cfg, ctx)

    def train_indices(self, task: Task) -> torch.Tensor | None:
        tasks = self.ctx.stream.tasks
        if task.id != tasks[-1].id:
            return None
        return torch.cat([t.train_idx for t in tasks]).unique()

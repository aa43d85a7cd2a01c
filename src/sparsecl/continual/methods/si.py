"""Synaptic Intelligence (Zenke et al., ICML 2017, "Continual Learning Through Synaptic Intelligence",
arXiv 1703.04200), as mammoth's ``si`` with the paper's path integral.

loss = CE(f(x), y) + c sum_k Omega_k (theta_k - theta*_k)^2, theta* the parameters at the end of the previous
task (at the start of training for the first). During a task every step adds -g_k * delta theta_k to omega_k
(g the applied gradient, delta theta the step's change); at the task end
Omega_k += omega_k / ((theta_k - theta*_k)^2 + xi), theta* <- theta, omega <- 0. Gradients are clipped
to [-1, 1] elementwise before the step, as in mammoth.

Deviation from mammoth: mammoth adds lr * g^2, the path integral of plain SGD at its base learning rate;
here the step's actual change is used, which is the same for plain SGD at a constant rate and stays right
under momentum, Adam or a learning-rate schedule.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.continual.base import MethodContext
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.penalty import AnchoredPenalty
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task
from sparsecl.contract import StepOutput


@CL_METHODS.register("si")
class SynapticIntelligence(AnchoredPenalty):
    """See the module docstring; ``importance`` is Omega."""

    options: tuple[str, ...] = ("masked_head", "si_c", "si_xi")
    weight_key = "si_c"

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.omega = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self._before: dict[str, torch.Tensor] = {}  # parameters before the coming optimizer step

    def on_task_start(self, state: Any, task: Task) -> None:
        super().on_task_start(state, task)
        if self.anchor is None:  # after the mask engine's begin(): inactive weights are already 0
            self.anchor = self.snapshot()

    def after_backward(self, state: Any, batch: Batch, out: StepOutput) -> None:
        torch.nn.utils.clip_grad_value_(list(self.params.values()), 1.0)
        self._before = self.snapshot()

    @torch.no_grad()
    def after_step(self, state: Any, batch: Batch, out: StepOutput) -> None:
        for n, p in self.params.items():
            if p.grad is not None:  # the gradient the step applied (masked by the engine where sparse)
                self.omega[n] -= p.grad * (p - self._before[n])
        self._before = {}

    @torch.no_grad()
    def on_task_end(self, state: Any, task: Task) -> None:
        if self.importance is None:
            self.importance = {n: torch.zeros_like(p) for n, p in self.params.items()}
        for n, p in self.params.items():
            self.importance[n] += self.omega[n] / ((p - self.anchor[n]).pow(2) + self.cfg.si_xi)
            self.omega[n].zero_()
        self.anchor = self.snapshot()

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "big_omega": self.importance,
                "omega": {n: o.clone() for n, o in self.omega.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.anchor, self.importance = sd["anchor"], sd["big_omega"]
        for n, o in sd["omega"].items():
            self.omega[n].copy_(o)

"""Optimisers behind a registry, and learning-rate schedules as pure functions of the step in a task.

The torch optimisers run with ``foreach=True`` (one multi-tensor kernel per update term instead of a
Python loop over parameters; on the CPU torch defaults to the loop): the same arithmetic, 3x less
per-step overhead on small models.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from sparsecl.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, cfg) -> torch.optim.Optimizer:  # noqa: ANN001 - TrainConfig
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, cfg) -> torch.optim.Optimizer:  # noqa: ANN001
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable, cfg) -> torch.optim.Optimizer:  # noqa: ANN001
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:  # noqa: ANN001
    return OPTIMIZERS.get(cfg.optimizer)(model.parameters(), cfg)


LrFactor = Callable[[int, int, int], float]  # (step in task, steps per task, epochs per task) -> factor
LR_SCHEDULES: Registry[Callable[..., LrFactor]] = Registry("lr schedule")


@LR_SCHEDULES.register("constant")
def _constant(cfg) -> LrFactor:  # noqa: ANN001
    return lambda step, total, epochs: 1.0


@LR_SCHEDULES.register("cosine")
def _cosine(cfg) -> LrFactor:  # noqa: ANN001
    # 0.5 (1 + cos(pi t / T)) over each task's planned steps (SGDR-style restart at every task)
    return lambda step, total, epochs: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


@LR_SCHEDULES.register("step")
def _step(cfg) -> LrFactor:  # noqa: ANN001
    marks = tuple(cfg.lr_step_epochs)

    def factor(step: int, total: int, epochs: int) -> float:
        epoch = step * epochs // max(total, 1)
        return cfg.lr_gamma ** sum(epoch >= m for m in marks)

    return factor


class LrSchedule:
    """Sets every param group's lr to ``base_lr * factor(step in task)``: stateless, so resume is exact."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg) -> None:  # noqa: ANN001
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.factor = LR_SCHEDULES.get(cfg.lr_schedule)(cfg)
        self.constant = cfg.lr_schedule == "constant"

    def apply(self, task_step: int, steps_per_task: int, epochs: int) -> float:
        f = self.factor(task_step, steps_per_task, epochs)
        if not self.constant:
            for g, base in zip(self.optimizer.param_groups, self.base):
                g["lr"] = base * f
        return self.base[0] * f

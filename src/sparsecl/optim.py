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


def make_optimizer(model: torch.nn.Module, cfg, own_groups: Iterable[str] = ()) -> torch.optim.Optimizer:  # noqa: ANN001
    """The configured optimizer over ``model``'s parameters; each parameter named in ``own_groups`` gets a
    param group of its own (the mask engine scales those groups' learning rates, ``sparsity.lr_scaling``),
    the rest share one group. Group order: the shared group first, then ``own_groups`` in order."""
    own = list(dict.fromkeys(own_groups))
    if not own:
        return OPTIMIZERS.get(cfg.optimizer)(model.parameters(), cfg)
    params = dict(model.named_parameters())
    alone = {id(params[n]) for n in own}
    rest = [p for p in model.parameters() if id(p) not in alone]
    groups = ([{"params": rest}] if rest else []) + [{"params": [params[n]]} for n in own]
    return OPTIMIZERS.get(cfg.optimizer)(groups, cfg)


LrFactor = Callable[[float, int], float]  # (position in nominal epochs, nominal epochs per task) -> factor
LR_SCHEDULES: Registry[Callable[..., LrFactor]] = Registry("lr schedule")


@LR_SCHEDULES.register("constant")
def _constant(cfg) -> LrFactor:  # noqa: ANN001
    return lambda pos, epochs: 1.0


@LR_SCHEDULES.register("cosine")
def _cosine(cfg) -> LrFactor:  # noqa: ANN001
    # 0.5 (1 + cos(pi t / T)) over each task (SGDR-style restart at every task)
    return lambda pos, epochs: 0.5 * (1.0 + math.cos(math.pi * min(pos, epochs) / epochs))


@LR_SCHEDULES.register("step")
def _step(cfg) -> LrFactor:  # noqa: ANN001
    marks = tuple(cfg.lr_step_epochs)
    return lambda pos, epochs: cfg.lr_gamma ** sum(pos >= m for m in marks)


class LrSchedule:
    """Sets every param group's lr to ``base_lr * factor(position)`` before each step: stateless, so resume
    is exact.

    The position is where the step falls in the task's NOMINAL training, in epochs: executed epoch + the
    fraction of that epoch's batches already done, so an epoch that Dynamic Data Removal shortened still
    spans one epoch of the schedule (a step count planned on the full split would leave the schedule
    unfinished). RigL_Mx (``sparsity.multiplier`` M) trains M times longer: the position is divided by M,
    so every anchor (cosine's end, ``lr_step_epochs``) scales along (RigL, Evci et al. 2020, "all schedule
    anchors scaled"). Lottery-ticket rewinding trains R + 1 rounds: the schedule restarts with every round,
    each a full training as in Frankle & Carbin (2019).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg, stretch: int = 1) -> None:  # noqa: ANN001
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]  # before any ``lr_scale`` (the mask engine's)
        self.factor = LR_SCHEDULES.get(cfg.lr_schedule)(cfg)
        self.constant = cfg.lr_schedule == "constant"
        self.epochs, self.stretch = cfg.epochs, stretch

    def position(self, epoch: int, done: float) -> float:
        """Nominal epochs into the current round for executed ``epoch`` (0-based) with the fraction
        ``done`` of its batches behind."""
        period = self.epochs * self.stretch  # executed epochs per round (a task trains rounds x period)
        return (epoch % period + done) / self.stretch

    def apply(self, epoch: int, done: float) -> float:
        f = self.factor(self.position(epoch, done), self.epochs)
        if not self.constant:
            for g, base in zip(self.optimizer.param_groups, self.base):
                g["lr"] = base * g.get("lr_scale", 1.0) * f
        return self.base[0] * f

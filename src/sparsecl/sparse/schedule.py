"""When masks are updated and by how much.

Step counting: ``t`` is the 1-based index of the optimizer step being taken (the first call of
``MaskEngine.step()`` is t = 1), so "every delta_T steps" means after delta_T steps of training, never at
initialisation. A drop/grow update happens at step t when

    begin_step <= t <= end_step   and   t % delta_T == 0,

with begin_step = floor(begin * total_steps) and end_step = T_end = floor(t_end * total_steps)
(RigL: delta_T = 100, T_end = 75 % of training). ``begin`` and ``t_end`` are fractions of the full run,
so RigL_Mx (total_steps M times longer) scales every anchor while delta_T stays fixed.

Drop fraction at an update step (absolute t, as RigL's ``cosine_decay(alpha, t, T_end)``):
cosine alpha/2 (1 + cos(pi t / T_end)); linear alpha (1 - t / T_end); constant alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from sparsecl.registry import Registry
from sparsecl.sparse.masks import exact_floor

if TYPE_CHECKING:
    from sparsecl.sparse.config import SparsityConfig

DropDecay = Callable[[float, int, int], float]  # (alpha, t, T_end) -> drop fraction
DROP_SCHEDULES: Registry[DropDecay] = Registry("drop schedule")


@DROP_SCHEDULES.register("cosine")
def cosine(alpha: float, t: int, t_end: int) -> float:
    return alpha / 2 * (1 + math.cos(math.pi * t / t_end))


@DROP_SCHEDULES.register("linear")
def linear(alpha: float, t: int, t_end: int) -> float:
    return alpha * (1 - t / t_end)


@DROP_SCHEDULES.register("constant")
def constant(alpha: float, t: int, t_end: int) -> float:
    return alpha


def fraction_step(fraction: float, total_steps: int) -> int:
    """A schedule anchor given as a fraction of the run, in steps: ``floor(fraction * total_steps)``."""
    return exact_floor(fraction * total_steps)


@dataclass(frozen=True)
class UpdateSchedule:
    """The drop/grow schedule of SET, RigL and SNFS (see the module docstring)."""

    begin_step: int
    end_step: int
    delta_t: int
    drop_fraction: float
    decay: str = "cosine"

    @classmethod
    def from_config(cls, cfg: "SparsityConfig", total_steps: int) -> "UpdateSchedule":
        return cls(fraction_step(cfg.begin, total_steps), fraction_step(cfg.t_end, total_steps), cfg.delta_t,
                   cfg.drop_fraction, cfg.drop_schedule)

    def is_update(self, t: int) -> bool:
        return max(self.begin_step, 1) <= t <= self.end_step and t % self.delta_t == 0

    def fraction(self, t: int) -> float:
        """Drop fraction f_decay(t), clamped to [0, 1]."""
        return min(1.0, max(0.0, DROP_SCHEDULES.get(self.decay)(self.drop_fraction, t, self.end_step)))

    def update_steps(self, total_steps: int) -> list[int]:
        """Every update step of a run of ``total_steps`` (for tests and FLOPs estimates)."""
        return [t for t in range(1, total_steps + 1) if self.is_update(t)]


def cubic_sparsity(t: int, s0: float, sf: float, t0: int, t1: int) -> float:
    """Gradual pruning (Zhu & Gupta, 2017, "To prune, or not to prune"):

        s_t = s_f + (s_0 - s_f) (1 - (t - t0) / (n dT))^3,   n dT = t1 - t0,

    s_0 up to t0 and s_f from t1 on.
    """
    if t <= t0:
        return s0
    if t >= t1:
        return sf
    return sf + (s0 - sf) * (1 - (t - t0) / (t1 - t0)) ** 3

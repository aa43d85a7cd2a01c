"""Closed-form training FLOPs (RigL, Evci et al. 2020, appendix H) and the GMP schedule's mean density:
the tests' reference for the per-step counter ``sparsecl.sparse.flops.TrainFlopsCounter``, which is the
library's one source of training FLOPs (these formulas lived in the library, used only by the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sparsecl.registry import Registry
from sparsecl.sparse.schedule import cubic_sparsity

# ----------------------------------------------------------------------------------------------------
# closed forms (RigL appendix H), used to cross-check the per-step counter


StepFlops = Callable[[float, float, int], float]
STEP_FLOPS: Registry[StepFlops] = Registry("training FLOPs formula")


def _fixed_sparse(f_s: float, f_d: float, delta_t: int) -> float:
    return 3.0 * f_s  # forward, gradient to activations, gradient to weights, all sparse


for _name in ("static", "set", "snip"):
    STEP_FLOPS.register(_name)(_fixed_sparse)


@STEP_FLOPS.register("dense")
def _dense(f_s: float, f_d: float, delta_t: int) -> float:
    return 3.0 * f_d


@STEP_FLOPS.register("snfs")
def _snfs(f_s: float, f_d: float, delta_t: int) -> float:
    return 2.0 * f_s + f_d  # the momentum of the dense gradient is needed every step


@STEP_FLOPS.register("rigl")
def _rigl(f_s: float, f_d: float, delta_t: int) -> float:
    # delta_t sparse steps and one update step whose weight gradient is dense, averaged:
    # (3 f_S dT + 2 f_S + f_D) / (dT + 1)
    return (3.0 * f_s * delta_t + 2.0 * f_s + f_d) / (delta_t + 1)


def train_flops_per_step(method: str, f_s: float, f_d: float, *, delta_t: int = 100) -> float:
    """Average training FLOPs per example and step (RigL appendix H).

    static/set/snip: 3 f_S; snfs: 2 f_S + f_D; rigl: (3 f_S dT + 2 f_S + f_D) / (dT + 1); dense: 3 f_D.
    As in the paper, RigL's formula is applied to every step of training although its updates stop at
    T_end (for ResNet-50 uniform 80 %, counting 3 f_S after T_end = 75 % would turn RigL_5x's 1.128x of
    dense into 1.125x). A run M times longer ("RigL_Mx") costs M times the per-step value times the
    steps of a 1x run. For GMP see ``gmp_average_density_flops``.
    """
    step = STEP_FLOPS.get(method)
    if not 0.0 <= f_s <= f_d:
        raise ValueError(f"need 0 <= f_s <= f_d, got f_s={f_s}, f_d={f_d}")
    if int(delta_t) != delta_t or delta_t < 1:
        raise ValueError(f"delta_t must be a positive integer, got {delta_t!r}")
    return step(float(f_s), float(f_d), int(delta_t))


@dataclass(frozen=True)
class GmpSchedule:
    """Gradual magnitude pruning's sparsity schedule (Zhu & Gupta, 2017), in optimizer steps."""

    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        b, e, f = self.begin_step, self.end_step, self.frequency
        if not 0 <= b < e or f < 1 or (e - b) % f:
            raise ValueError(
                "need 0 <= begin_step < end_step with end_step - begin_step a multiple of frequency >= 1; "
                f"got begin_step={b}, end_step={e}, frequency={f}"
            )

    def sparsity(self, step: int) -> float:
        """s_t = s_f + (s_0 - s_f) (1 - (t_k - t_0) / (t_end - t_0))^3, where t_k is the last pruning step
        <= t on the grid t_0, t_0 + dT, ..., t_end (the mask only changes there); s_0 before t_0, s_f from
        t_end on."""
        b, e, f = self.begin_step, self.end_step, self.frequency
        if step < b:
            return self.initial_sparsity
        t_k = e if step >= e else b + (step - b) // f * f
        return cubic_sparsity(t_k, self.initial_sparsity, self.final_sparsity, b, e)


def gmp_sparsity(step: int, **schedule: float) -> float:
    """Sparsity of gradual magnitude pruning at ``step``; ``schedule``: the fields of ``GmpSchedule``."""
    return GmpSchedule(**schedule).sparsity(step)


def gmp_average_density_flops(f_d: float, f_s: float, *, total_steps: int, **schedule: float) -> float:
    """Mean forward FLOPs per example over steps 0..total_steps-1 of a GMP run (training per step is 3x);
    ``schedule``: the fields of ``GmpSchedule``.

    ``f_s`` is the forward at ``final_sparsity``. Every pruned layer shares the sparsity s_t (layers kept
    dense are in both f_d and f_s), so the forward is linear in s_t:
        f(s) = f_D - s / s_f * (f_D - f_S)
    and the mean over steps is f at the mean sparsity, summed exactly over every step of the
    piecewise-constant schedule of ``gmp_sparsity``.

    Reference check (ResNet-50, uniform 80 % with the stem dense; RigL's colab: 32000 steps, pruning at
    steps 10000, 11000, ..., 25000): this exact mean is 0.569x of dense. The published 0.56x is the
    colab's average of 33 samples at steps 0, 1000, ..., 32000, whose last sample lies one step past the
    end of training and adds one extra sample at s_f (0.559x with our count).
    """
    g = GmpSchedule(**schedule)
    initial_sparsity, final_sparsity = g.initial_sparsity, g.final_sparsity
    begin_step, end_step, frequency = g.begin_step, g.end_step, g.frequency
    if not 0.0 <= initial_sparsity < final_sparsity <= 1.0:
        raise ValueError(
            f"need 0 <= initial_sparsity < final_sparsity <= 1, got {initial_sparsity}, {final_sparsity}"
        )
    if not 0.0 <= f_s <= f_d:
        raise ValueError(f"need 0 <= f_s <= f_d, got f_s={f_s}, f_d={f_d}")
    if total_steps < end_step:
        raise ValueError(f"total_steps ({total_steps}) must reach end_step ({end_step})")
    sparsity = g.sparsity

    # the schedule is constant between pruning steps: one value per run [a, b) of equal steps
    bounds = sorted({0, *range(begin_step, end_step, frequency), end_step, total_steps})
    mean_sparsity = sum((b - a) * sparsity(a) for a, b in zip(bounds, bounds[1:])) / total_steps
    return f_d - mean_sparsity / final_sparsity * (f_d - f_s)



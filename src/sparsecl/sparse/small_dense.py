"""Small-Dense: the dense baseline with the same parameter count as a sparse model (RigL's tables).

``target_param_count(model, cfg)`` is what the sparse config keeps of ``model`` (active weights of the
sparse layers + every other parameter); ``match_width(build, target)`` finds the width multiplier whose
dense model comes closest to it, by bisection (parameter counts grow with the width).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.distributions import DISTRIBUTIONS, SCORED_DISTRIBUTIONS, budget
from sparsecl.sparse.filters import select_layers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def target_param_count(model: nn.Module, cfg: SparsityConfig) -> int:
    """Parameters a sparse run of ``cfg`` keeps active in ``model`` (filter + distribution at cfg.density).

    Under ``distribution=global`` only the total is known before training: the budget.
    """
    specs = select_layers(model, cfg.layers, cfg.dense_first, cfg.dense_last)
    if cfg.distribution in SCORED_DISTRIBUTIONS:
        active = max(budget(specs, cfg.density), sum(s.numel for s in specs if s.forced_dense))
    else:
        active = sum(DISTRIBUTIONS.get(cfg.distribution)(specs, cfg.density, custom=cfg.custom_densities))
    return count_params(model) - sum(s.numel for s in specs) + active


def match_width(build: Callable[[float], nn.Module], target_params: int, lo: float = 1 / 64,
                hi: float = 1.0, iters: int = 30) -> float:
    """Width multiplier in [lo, hi] whose ``build(width)`` has the parameter count closest to ``target_params``.

    ``build`` must give non-decreasing parameter counts in the width (channel rounding makes them a step
    function; the bisection narrows the step that brackets the target). Builds ``iters + 2`` models at most.
    """
    if not 0 < lo < hi:
        raise ValueError(f"match_width needs 0 < lo < hi, got lo={lo} hi={hi}")
    c_lo, c_hi = count_params(build(lo)), count_params(build(hi))
    if target_params <= c_lo:
        return lo
    if target_params >= c_hi:
        return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        c = count_params(build(mid))
        if c == target_params:
            return mid
        if c < target_params:
            lo, c_lo = mid, c
        else:
            hi, c_hi = mid, c
    return lo if target_params - c_lo <= c_hi - target_params else hi

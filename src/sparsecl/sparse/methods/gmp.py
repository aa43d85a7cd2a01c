"""Gradual magnitude pruning (Zhu & Gupta, 2017, "To prune, or not to prune: exploring the efficacy of
pruning for model compression"): start dense (or at ``gmp_initial_density``) and prune by |w| every
delta_T steps along the cubic schedule

    s_t = s_f + (s_0 - s_f) (1 - (t - t0) / (n dT))^3,     t0 = gmp_begin * T,  t0 + n dT = gmp_end * T.

Pruning steps are t0 < t <= t1 with (t - t0) a multiple of delta_T, plus t1 itself so the final sparsity is
reached exactly. Pruned weights never come back. Per layer, s_f is the layer's sparsity under the
distribution and s_0 = min(1 - gmp_initial_density, s_f); with ``distribution=global`` the overall sparsity
follows the formula and one magnitude ranking across layers decides where it goes. The optimizer steps
first, then the mask is pruned (as in the paper's TensorFlow implementation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS, LossClosure, SparseMethod, magnitudes
from sparsecl.sparse.schedule import cubic_sparsity, fraction_step

if TYPE_CHECKING:
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine


@SPARSE_METHODS.register("gmp")
class GMP(SparseMethod):
    scored = True
    supports_nm = False

    def __init__(self, engine: "MaskEngine") -> None:
        super().__init__(engine)
        self.t0 = fraction_step(self.cfg.gmp_begin, engine.total_steps)
        self.t1 = fraction_step(self.cfg.gmp_end, engine.total_steps)

    @classmethod
    def validate(cls, cfg: "SparsityConfig") -> None:
        if cfg.gmp_initial_density < cfg.density:
            raise ValueError(f"sparsity.gmp_initial_density ({cfg.gmp_initial_density}) must be >= density "
                             f"({cfg.density}): gradual pruning only removes weights")

    def density_at(self, t: int) -> Callable[[float], float]:
        """Maps a layer's final density d to its density at step t along the cubic schedule."""
        s0 = 1.0 - self.cfg.gmp_initial_density
        return lambda d: 1.0 - cubic_sparsity(t, min(s0, 1.0 - d), 1.0 - d, self.t0, self.t1)

    def initial_scores(self, loss_closure: LossClosure | None) -> list[torch.Tensor]:
        return magnitudes(self.engine)

    def initial_counts(self, scores: list[torch.Tensor] | None) -> list[int]:
        return self.engine.counts_for(self.density_at(self.t0), scores)

    def is_update(self, t: int) -> bool:
        return self.t0 < t <= self.t1 and ((t - self.t0) % self.cfg.delta_t == 0 or t == self.t1)

    def update(self, t: int) -> dict[int, torch.Tensor]:
        scores = magnitudes(self.engine, active_only=True)
        counts = self.engine.counts_for(self.density_at(t), scores)
        new = {}
        for i, (layer, count) in enumerate(zip(self.engine.layers, counts, strict=True)):
            if count < layer.count:
                new[i] = self.engine.pattern.select(scores[i], count, self.engine.generator_for(layer.param.device))
        return new

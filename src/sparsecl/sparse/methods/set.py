"""SET (Mocanu et al., Nature Communications 2018, "Scalable training of artificial neural networks with
adaptive sparse connectivity inspired by network science"): drop the smallest |w|, grow at random.

The shared drop/grow machinery of the RigL family lives here; RigL and SNFS only change the grow score
(and RigL skips the optimizer step on update steps). Per layer on an update step t:

    n_drop = floor(f_decay(t) * active)          (schedule.UpdateSchedule)
    drop the n_drop smallest |w| among active weights, then grow n_drop positions with the largest grow
    score among those inactive after the drop.

As in the spec's reference, SET takes its optimizer step first and updates the mask after it. Deviation
from the paper: SET updates at the end of every epoch with a constant zeta = 0.3; we use the shared
RigL schedule (delta_T, T_end, decay), which ``delta_t`` / ``drop_schedule=constant`` can reproduce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparsecl.sparse.masks import exact_floor
from sparsecl.sparse.methods.base import SPARSE_METHODS, SparseMethod
from sparsecl.sparse.schedule import UpdateSchedule

if TYPE_CHECKING:
    from sparsecl.sparse.engine import MaskEngine


@SPARSE_METHODS.register("set")
class SET(SparseMethod):
    def __init__(self, engine: "MaskEngine") -> None:
        super().__init__(engine)
        self.schedule = UpdateSchedule.from_config(self.cfg, engine.total_steps)

    def is_update(self, t: int) -> bool:
        return self.schedule.is_update(t)

    def grow_score(self, i: int, generator: torch.Generator) -> torch.Tensor:
        """Score of layer i's candidates for growth: uniform noise (random growth)."""
        p = self.engine.layers[i].param
        return torch.rand(p.shape, generator=generator, device=p.device)

    def update(self, t: int) -> dict[int, torch.Tensor]:
        f = self.schedule.fraction(t)
        new = {}
        for i, layer in enumerate(self.engine.layers):
            n_drop = exact_floor(f * layer.count)
            if n_drop == 0 or layer.count == layer.numel:
                continue
            gen = self.engine.generator_for(layer.param.device)
            new[i] = self.engine.pattern.drop_grow(layer.mask, layer.param.detach().abs(), self.grow_score(i, gen),
                                                   n_drop, gen)
        return new

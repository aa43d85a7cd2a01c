"""SNIP (Lee, Ajanthan & Torr, ICLR 2019, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity"): keep the weights with the largest |g * w| on one batch at initialisation, then train the
fixed mask.

Deviations: the paper ranks globally (normalised saliency; the normalisation does not change the ranking);
here the ranking is per layer under the chosen distribution, or global with ``distribution=global``. The
closure's forward runs in the model's current mode, so BatchNorm running statistics see that one batch.
"""

from __future__ import annotations

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS, LossClosure, SparseMethod


@SPARSE_METHODS.register("snip")
class SNIP(SparseMethod):
    scored = True

    def initial_scores(self, loss_closure: LossClosure | None) -> list[torch.Tensor]:
        if loss_closure is None:
            raise ValueError("snip scores |g * w| on one batch: call engine.begin(loss_closure)")
        params = [layer.param for layer in self.engine.layers]
        grads = torch.autograd.grad(loss_closure(), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else (g * p).detach().abs() for g, p in zip(grads, params)]

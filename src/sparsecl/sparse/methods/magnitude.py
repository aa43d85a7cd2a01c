"""One-shot magnitude pruning at initialisation: keep the largest |w| of the random initialisation per
layer (under the chosen distribution), then train the fixed mask.

This is SparCL's initial mask (the release prunes the initial weights by per-layer magnitude) and the
engine method TDM runs on; on its own it is a Static baseline whose mask is chosen by magnitude instead of
at random.
"""

from __future__ import annotations

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS, LossClosure, SparseMethod, magnitudes


@SPARSE_METHODS.register("magnitude")
class MagnitudeAtInit(SparseMethod):
    scored = True

    def initial_scores(self, loss_closure: LossClosure | None) -> list[torch.Tensor]:
        return magnitudes(self.engine)

"""Dense baselines: no masks at all; the engine's step is the optimizer's step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparsecl.sparse.methods.base import SPARSE_METHODS, SparseMethod

if TYPE_CHECKING:
    from sparsecl.sparse.config import SparsityConfig


@SPARSE_METHODS.register("dense")
class Dense(SparseMethod):
    """Every weight trained; ``density`` must be 1."""

    uses_masks = False
    supports_nm = False

    @classmethod
    def validate(cls, cfg: "SparsityConfig") -> None:
        if cfg.density != 1.0:
            raise ValueError(f"sparsity.method=dense trains every weight, so density must be 1 (got {cfg.density}); "
                             "use small_dense for a narrower dense net of the same parameter count")


@SPARSE_METHODS.register("small_dense")
class SmallDense(Dense):
    """Small-Dense (RigL's same-parameter-count baseline): a dense model made narrower so that its
    parameter count matches the sparse model at ``density`` (``sparsecl.sparse.small_dense.match_width``
    picks the width; the model builder applies it). The engine itself trains it densely."""

    @classmethod
    def validate(cls, cfg: "SparsityConfig") -> None:
        pass

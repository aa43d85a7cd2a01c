"""Static sparse training: the base class's behaviour under its registry name."""

from __future__ import annotations

from sparsecl.sparse.methods.base import SPARSE_METHODS, SparseMethod


@SPARSE_METHODS.register("static")
class Static(SparseMethod):
    """Random exact-count masks per layer from the distribution, fixed for the whole run (RigL's
    "Static"/"scratch" baseline)."""

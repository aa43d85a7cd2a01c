"""Sparse-training methods behind ``SPARSE_METHODS``; importing this package registers them all.

One short module per method; each is a small override of ``SparseMethod`` (see ``base``).
"""

from sparsecl.sparse.methods.base import SPARSE_METHODS, LossClosure, SparseMethod
from sparsecl.sparse.methods import dense, gmp, lth, magnitude, rigl, snfs, snip, static  # noqa: F401  (registration)
from sparsecl.sparse.methods import set as _set  # noqa: F401  (registration; `set` would shadow the builtin)

__all__ = ["SPARSE_METHODS", "LossClosure", "SparseMethod"]

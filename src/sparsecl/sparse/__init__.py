"""Sparse training: masks, distributions, schedules, the mask engine and the RigL family of methods.

Modules: ``masks`` (pure mask functions), ``patterns`` (unstructured, N:M), ``filters`` (which layers
are sparse), ``distributions`` (uniform, ER, ERK, custom, global), ``schedule`` (when and how much),
``methods`` (one file per method), ``engine`` (``MaskEngine``), ``small_dense``, ``flops``.
"""

from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine, StepInfo
from sparsecl.sparse.methods import SPARSE_METHODS, SparseMethod

__all__ = ["SPARSE_METHODS", "MaskEngine", "SparseMethod", "SparsityConfig", "StepInfo"]

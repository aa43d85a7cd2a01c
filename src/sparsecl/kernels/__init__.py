"""Truly sparse execution: CSR linear layers whose cost and memory scale with density.

Public API: :class:`SparseLinear`, :class:`SparseLinearFunction`, :func:`remap_optimizer_state`,
:func:`choose_path`, :func:`sparsify_model`, :func:`densify_model`, :func:`sparse_masks`.
"""

from sparsecl.kernels.convert import densify_model, sparse_masks, sparsify_model
from sparsecl.kernels.function import SparseLinearFunction, sparse_linear
from sparsecl.kernels.linear import SparseLinear
from sparsecl.kernels.optim_state import remap_optimizer_state
from sparsecl.kernels.paths import choose_path

__all__ = [
    "SparseLinear",
    "SparseLinearFunction",
    "choose_path",
    "densify_model",
    "remap_optimizer_state",
    "sparse_linear",
    "sparse_masks",
    "sparsify_model",
]

"""Truly sparse execution: CSR linear and convolution layers whose cost and memory scale with density.

Public API: :class:`SparseLinear`, :class:`SparseConv2d` (both :class:`CsrWeightModule`),
:class:`SparseLinearFunction`, :func:`remap_optimizer_state`, :func:`choose_path`, :func:`choose_conv_path`,
:func:`sparsify_model`, :func:`densify_model`, :func:`sparse_masks`.
"""

from sparsecl.kernels.base import CsrWeightModule
from sparsecl.kernels.conv import SparseConv2d
from sparsecl.kernels.convert import densify_model, sparse_masks, sparsify_model
from sparsecl.kernels.function import SparseLinearFunction, sparse_linear
from sparsecl.kernels.linear import SparseLinear
from sparsecl.kernels.optim_state import remap_optimizer_state
from sparsecl.kernels.paths import choose_conv_path, choose_path

__all__ = [
    "CsrWeightModule",
    "SparseConv2d",
    "SparseLinear",
    "SparseLinearFunction",
    "choose_conv_path",
    "choose_path",
    "densify_model",
    "remap_optimizer_state",
    "sparse_linear",
    "sparse_masks",
    "sparsify_model",
]

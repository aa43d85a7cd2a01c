"""``CsrWeightModule``: a layer whose weight lives only at its active positions (CSR), the shared part of
SparseLinear and SparseConv2d.

The weight of shape [out, *rest] is viewed as the matrix [out, prod(rest)] and stored in CSR form. The
trainable weight is ``values`` (an nn.Parameter of shape [nnz]); the optimizer therefore keeps state
(momentum, Adam moments) for the active weights only, so weight + optimizer memory is proportional to
density. The index structure lives in buffers: ``crow_indices`` and ``col_indices`` are saved in the
state dict; the transposed structure (``t_crow``, ``t_col``, ``perm``) is derived and rebuilt on load.
Masks change with :meth:`CsrWeightModule.set_mask` (sparse-training updates such as RigL's drop/grow),
which keeps surviving values, starts new positions at zero, and returns the old -> new position map that
:func:`sparsecl.kernels.optim_state.remap_optimizer_state` uses.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn

from sparsecl.kernels.backends import BACKEND_CHOICES
from sparsecl.kernels.csr import CsrStructure, position_map, structure_from_crow_col, structure_from_mask


class CsrWeightModule(nn.Module, abc.ABC):
    """Holds ``values`` [nnz], an optional dense ``bias`` [out] and the CSR index buffers of a weight."""

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        mask: torch.Tensor,
        bias: bool,
        dtype: torch.dtype | None,
        backend: str,
    ) -> None:
        super().__init__()
        if tuple(mask.shape) != tuple(weight_shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight_shape)}")
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKEND_CHOICES)}")
        self.weight_shape, self.backend = tuple(weight_shape), backend
        s = structure_from_mask(mask.reshape(weight_shape[0], -1))
        dtype = dtype or torch.get_default_dtype()
        self.values = nn.Parameter(torch.zeros(s.nnz, dtype=dtype, device=mask.device))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0], dtype=dtype, device=mask.device)) if bias else None
        self._install(s)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return self.weight_shape[0], math.prod(self.weight_shape[1:])

    @property
    def structure(self) -> CsrStructure:
        """The index structure, read from the buffers (so it follows ``.to(device)``); the same object while
        the buffers are, so that what kernels derive from it can be cached (``conv._IndexCache``, which also
        notices in-place changes of the buffers through their version counters)."""
        bufs = (self.crow_indices, self.col_indices, self.t_crow, self.t_col, self.perm)
        cached = self.__dict__.get("_structure")
        if cached is None or any(a is not b for a, b in zip(cached[0], bufs)):
            cached = (bufs, CsrStructure(self.matrix_shape, *bufs))
            self.__dict__["_structure"] = cached
        return cached[1]

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        return self.nnz / math.prod(self.weight_shape)

    def _install(self, s: CsrStructure) -> None:
        for name, t in {"crow_indices": s.crow, "col_indices": s.col}.items():
            self.register_buffer(name, t, persistent=True)
        for name, t in {"t_crow": s.t_crow, "t_col": s.t_col, "perm": s.perm}.items():
            self.register_buffer(name, t, persistent=False)

    def _load_dense(self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None) -> None:
        with torch.no_grad():
            self.values.copy_(weight.detach()[mask.to(weight.device)])  # row-major order = CSR order
            if bias is not None:
                self.bias.copy_(bias.detach())

    def to_dense(self) -> torch.Tensor:
        """The dense weight: the values at their positions, zeros elsewhere (detached)."""
        w = self.values.new_zeros(math.prod(self.weight_shape))
        w[self.structure.flat_index()] = self.values.detach()
        return w.view(self.weight_shape)

    @abc.abstractmethod
    def to_dense_module(self) -> nn.Module:
        """The equivalent dense layer (weight = ``to_dense()``)."""

    def mask(self) -> torch.Tensor:
        """Dense boolean mask of the active positions, of the weight's shape."""
        m = torch.zeros(math.prod(self.weight_shape), dtype=torch.bool, device=self.values.device)
        m[self.structure.flat_index()] = True
        return m.view(self.weight_shape)

    def set_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Rebuild the structure for ``mask``; returns ``old_to_new`` ([old nnz], -1 where dropped).

        Surviving positions keep their values, new positions start at 0. The ``values`` Parameter object
        is kept (its ``.data`` is swapped), so optimizers still hold it; its ``.grad`` is cleared because
        its shape changed. Carry optimizer state over with ``remap_optimizer_state``.
        """
        if tuple(mask.shape) != self.weight_shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {self.weight_shape}")
        old = self.structure
        new = structure_from_mask(mask.to(self.values.device).reshape(self.matrix_shape))
        old_to_new = position_map(old, new)
        keep = old_to_new >= 0
        new_values = self.values.new_zeros(new.nnz)
        new_values[old_to_new[keep]] = self.values.detach()[keep]
        self.values.data = new_values
        self.values.grad = None
        self._install(new)
        return old_to_new

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Resize to the stored structure first (its nnz may differ from ours), then load as usual."""
        crow, col = state_dict.get(prefix + "crow_indices"), state_dict.get(prefix + "col_indices")
        if crow is not None and col is not None:
            dev = self.values.device
            s = structure_from_crow_col(crow.to(dev), col.to(dev), self.matrix_shape)
            self.values.data = self.values.new_zeros(s.nnz)
            self.values.grad = None
            self._install(s)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

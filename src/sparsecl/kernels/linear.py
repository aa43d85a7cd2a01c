"""``SparseLinear``: an nn.Linear whose weight lives only at its active positions (CSR).

The trainable weight is ``values`` (an nn.Parameter of shape [nnz]); the optimizer therefore keeps
state (momentum, Adam moments) for the active weights only, so weight + optimizer memory is
proportional to density. The index structure lives in buffers: ``crow_indices`` and ``col_indices``
are saved in the state dict; the transposed structure (``t_crow``, ``t_col``, ``perm``) is derived and
rebuilt on load. Masks change with :meth:`SparseLinear.set_mask` (sparse-training updates such as
RigL's drop/grow), which keeps surviving values, starts new positions at zero, and returns the
old -> new position map that :func:`sparsecl.kernels.optim_state.remap_optimizer_state` uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsecl.kernels.backends import BACKEND_CHOICES
from sparsecl.kernels.csr import (
    CsrStructure,
    position_map,
    structure_from_crow_col,
    structure_from_mask,
)
from sparsecl.kernels.function import sparse_linear

_STRUCT_BUFFERS = ("crow_indices", "col_indices", "t_crow", "t_col", "perm")


class SparseLinear(nn.Module):
    """y = x W^T + b with W [out, in] stored as CSR values + indices (see ``kernels.function``).

    Deviation from nn.Linear: no ``weight`` attribute; ``to_dense()`` returns it (zeros off the mask).
    ``backend`` picks the kernels ("auto": native C kernels for float32 on CPU when they compile, else
    torch sparse ops; see ``kernels.backends``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: torch.Tensor,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask shape {tuple(mask.shape)} != (out, in) = {(out_features, in_features)}")
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKEND_CHOICES)}")
        self.in_features, self.out_features, self.backend = in_features, out_features, backend
        s = structure_from_mask(mask)
        dtype = dtype or torch.get_default_dtype()
        self.values = nn.Parameter(torch.zeros(s.nnz, dtype=dtype, device=mask.device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=mask.device)) if bias else None
        self._install(s)

    # ----------------------------------------------------------------- construction and conversion
    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor, backend: str = "auto") -> "SparseLinear":
        """Copy ``linear``'s weight at ``mask``'s True entries (entries off the mask are dropped) and its bias."""
        w = linear.weight.detach()
        bias = linear.bias is not None
        layer = cls(linear.in_features, linear.out_features, mask.to(w.device), bias, w.dtype, backend)
        with torch.no_grad():
            layer.values.copy_(w[mask.to(w.device)])  # boolean indexing is row-major = CSR order
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def to_dense(self) -> torch.Tensor:
        """The dense [out, in] weight: the values at their positions, zeros elsewhere (detached)."""
        w = self.values.new_zeros(self.out_features * self.in_features)
        w[self.structure.flat_index()] = self.values.detach()
        return w.view(self.out_features, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An equivalent dense nn.Linear (weight = ``to_dense()``)."""
        v = self.values
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None, v.device, v.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias.detach())
        return lin

    def mask(self) -> torch.Tensor:
        """Dense boolean [out, in] mask of the active positions."""
        m = torch.zeros(self.out_features * self.in_features, dtype=torch.bool, device=self.values.device)
        m[self.structure.flat_index()] = True
        return m.view(self.out_features, self.in_features)

    # ----------------------------------------------------------------- structure
    @property
    def structure(self) -> CsrStructure:
        """The index structure, read from the buffers (so it follows ``.to(device)``)."""
        return CsrStructure(
            (self.out_features, self.in_features),
            self.crow_indices,
            self.col_indices,
            self.t_crow,
            self.t_col,
            self.perm,
        )

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        return self.nnz / (self.out_features * self.in_features)

    def _install(self, s: CsrStructure) -> None:
        persistent = {"crow_indices": s.crow, "col_indices": s.col}
        derived = {"t_crow": s.t_crow, "t_col": s.t_col, "perm": s.perm}
        for name, t in persistent.items():
            self.register_buffer(name, t, persistent=True)
        for name, t in derived.items():
            self.register_buffer(name, t, persistent=False)

    def set_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Rebuild the structure for ``mask``; returns ``old_to_new`` ([old nnz], -1 where dropped).

        Surviving positions keep their values, new positions start at 0. The ``values`` Parameter object
        is kept (its ``.data`` is swapped), so optimizers still hold it; its ``.grad`` is cleared because
        its shape changed. Carry optimizer state over with ``remap_optimizer_state``.
        """
        if tuple(mask.shape) != (self.out_features, self.in_features):
            raise ValueError(f"mask shape {tuple(mask.shape)} != {(self.out_features, self.in_features)}")
        old = self.structure
        new = structure_from_mask(mask.to(self.values.device))
        old_to_new = position_map(old, new)
        keep = old_to_new >= 0
        new_values = self.values.new_zeros(new.nnz)
        new_values[old_to_new[keep]] = self.values.detach()[keep]
        self.values.data = new_values
        self.values.grad = None
        self._install(new)
        return old_to_new

    # ----------------------------------------------------------------- module API
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_linear(x, self.values, self.bias, self.structure, self.backend)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nnz={self.nnz}, density={self.density:.4f}, bias={self.bias is not None}, backend={self.backend}"
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Resize to the stored structure first (its nnz may differ from ours), then load as usual."""
        crow, col = state_dict.get(prefix + "crow_indices"), state_dict.get(prefix + "col_indices")
        if crow is not None and col is not None:
            dev = self.values.device
            s = structure_from_crow_col(crow.to(dev), col.to(dev), (self.out_features, self.in_features))
            self.values.data = self.values.new_zeros(s.nnz)
            self.values.grad = None
            self._install(s)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

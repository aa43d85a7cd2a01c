"""``SparseLinear``: an nn.Linear whose weight lives only at its active positions (CSR).

Storage, mask rebuilds and checkpointing are those of :class:`sparsecl.kernels.base.CsrWeightModule`;
the products are :class:`sparsecl.kernels.function.SparseLinearFunction`.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecl.kernels.base import CsrWeightModule
from sparsecl.kernels.function import sparse_linear


class SparseLinear(CsrWeightModule):
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
        super().__init__((out_features, in_features), mask, bias, dtype, backend)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor, backend: str = "auto") -> "SparseLinear":
        """Copy ``linear``'s weight at ``mask``'s True entries (entries off the mask are dropped) and its bias."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, mask.to(w.device), linear.bias is not None, w.dtype,
                    backend)
        layer._load_dense(w, mask, linear.bias)
        return layer

    def to_dense_module(self) -> nn.Linear:
        """An equivalent dense nn.Linear (weight = ``to_dense()``)."""
        v = self.values
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None, v.device, v.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias.detach())
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_linear(x, self.values, self.bias, self.structure, self.backend)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nnz={self.nnz}, density={self.density:.4f}, bias={self.bias is not None}, backend={self.backend}"
        )

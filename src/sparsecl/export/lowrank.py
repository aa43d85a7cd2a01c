"""Low-rank factorisation of Linear layers by truncated SVD (Denton et al., 2014, "Exploiting Linear
Structure Within Convolutional Networks for Efficient Evaluation", its matrix SVD applied to fully connected
layers).

W [out, in] = U diag(s) V^T with s_1 >= s_2 >= ... The rank-r truncation W_r = U_r diag(s_r) V_r^T is the
best rank-r approximation in Frobenius norm (Eckart-Young), with ||W - W_r||_F^2 = sum_{i>r} s_i^2.
It is stored as two layers, y = B (A x) + b, with the singular values split evenly,
A = diag(sqrt(s_r)) V_r^T [r, in] and B = U_r diag(sqrt(s_r)) [out, r], so that both factors have the same
scale. Parameters: r (in + out) + out instead of in * out + out, a saving only when r < in*out / (in+out).
The SVD runs in float64; the factors are cast back to the layer's dtype. Deviation: a sparse layer's
zeros are not preserved (A and B are dense); factorise either a dense model or accept dense factors.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


class LowRankLinear(nn.Sequential):
    """``Sequential(Linear(in, rank, bias=False), Linear(rank, out, bias))`` with a ``rank`` attribute."""

    def __init__(self, first: nn.Linear, second: nn.Linear) -> None:
        super().__init__(first, second)
        self.rank = first.out_features
        self.in_features, self.out_features = first.in_features, second.out_features


def select_rank(singular_values: Tensor, energy: float) -> int:
    """Smallest r with sum_{i<=r} s_i^2 >= energy * sum_i s_i^2 (at least 1, at most len(s))."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1]; got {energy!r}")
    power = singular_values.to(torch.float64) ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(power, 0) / total
    r = int(torch.searchsorted(kept, torch.tensor([energy], dtype=torch.float64))) + 1
    return min(r, singular_values.numel())  # rounding may leave kept[-1] a hair below 1.0


def _linear_like(in_features: int, out_features: int, bias: bool, ref: Tensor, weight: Tensor,
                 bias_value: Tensor | None) -> nn.Linear:
    """A Linear holding ``weight``/``bias_value``; built on the meta device so no RNG is drawn."""
    layer = nn.Linear(in_features, out_features, bias=bias, device="meta", dtype=ref.dtype)
    layer = layer.to_empty(device=ref.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias_value is not None:
            layer.bias.copy_(bias_value)
    return layer


def _svd(linear: nn.Linear) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of the weight in float64: u [out, k], s [k], vh [k, in], k = min(in, out)."""
    return torch.linalg.svd(linear.weight.detach().to(torch.float64), full_matrices=False)


def _from_svd(linear: nn.Linear, u: Tensor, s: Tensor, vh: Tensor, r: int) -> LowRankLinear:
    root = s[:r].sqrt()
    a = root[:, None] * vh[:r]  # [r, in]   A = diag(sqrt(s_r)) V_r^T
    b = u[:, :r] * root[None, :]  # [out, r]  B = U_r diag(sqrt(s_r))
    w, bias = linear.weight.detach(), linear.bias.detach() if linear.bias is not None else None
    first = _linear_like(linear.in_features, r, False, w, a, None)
    second = _linear_like(r, linear.out_features, bias is not None, w, b, bias)
    return LowRankLinear(first, second)


def factorize_linear(linear: nn.Linear, *, rank: int | None = None,
                     energy: float | None = None) -> LowRankLinear:
    """Truncated-SVD factorisation of ``linear`` with the given ``rank`` or kept spectral ``energy``."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    u, s, vh = _svd(linear)
    r = select_rank(s, energy) if energy is not None else rank
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= s.numel():
        raise ValueError(f"rank must be an int in [1, {s.numel()}]; got {r!r}")
    return _from_svd(linear, u, s, vh, r)


def factorize_model(model: nn.Module, *, rank_ratio: float | None = None, energy: float | None = None,
                    min_features: int = 32) -> nn.Module:
    """A copy of ``model`` whose Linear layers are factorised where that saves parameters.

    Layers with min(in, out) < ``min_features`` are kept (e.g. a 10-way classifier). The rank is
    ceil(rank_ratio * min(in, out)) or ``select_rank(s, energy)``; a layer is replaced only when
    r (in + out) < in * out. Conv layers are left alone.
    """
    if (rank_ratio is None) == (energy is None):
        raise ValueError("give exactly one of rank_ratio and energy")
    if rank_ratio is not None and not 0.0 < rank_ratio <= 1.0:
        raise ValueError(f"rank_ratio must be in (0, 1]; got {rank_ratio!r}")
    if not isinstance(min_features, int) or isinstance(min_features, bool) or min_features < 1:
        raise ValueError(f"min_features must be a positive int; got {min_features!r}")
    model = copy.deepcopy(model)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and min(m.in_features, m.out_features) >= min_features]
    for name, linear in targets:
        u, s, vh = _svd(linear)
        r = max(1, math.ceil(rank_ratio * s.numel())) if rank_ratio is not None else select_rank(s, energy)
        if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            continue  # no parameter saving at this rank
        factored = _from_svd(linear, u, s, vh, r)
        if not name:  # the model is itself a Linear
            return factored
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, factored)
    return model

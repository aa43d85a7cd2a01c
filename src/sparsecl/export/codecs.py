"""Value codecs: how the numbers of one tensor are stored in a compressed checkpoint.

A codec maps a tensor to a same-shaped tensor in a storage dtype plus small side arrays, and back:

* ``raw``  -- the tensor's own dtype and bytes; lossless. User-facing name ``fp32``.
* ``fp16`` -- IEEE half, round-to-nearest-even: |w - fp16(w)| <= 2^-11 |w| for |w| >= 2^-14 (normal
  range) and <= 2^-25 below it (subnormal spacing 2^-24). Finite values beyond 65504 would become inf, so
  they are refused.
* ``int8`` -- symmetric, one scale per output channel (dim 0) for tensors with dim >= 2:
  s_c = max_j |W[c, j]| / 127, q = clamp(round(W / s_c), -127, 127), W^ = q * s_c, hence
  |W - W^| <= s_c / 2 (round-to-nearest; the clamp never binds because |W / s_c| <= 127).
  Symmetric [-127, 127] keeps 0 exactly representable (zero stays zero: masks survive) and the grid
  symmetric (Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", sec. 2.1; per-channel as in Krishnamoorthi, 2018, arXiv:1806.08342).
  A channel whose max is 0 gets s_c = 0 and q = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from sparsecl.registry import Registry

INT8_MAX = 127
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Encoded:
    """``data``: same shape as the input, in the codec's storage dtype; ``extras``: named 1-D side arrays."""

    data: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


class ValueCodec(Protocol):
    def storage_dtype(self, dtype: torch.dtype) -> torch.dtype: ...

    def extras_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[torch.dtype, int]]: ...

    def encode(self, t: Tensor) -> Encoded: ...

    def decode(self, enc: Encoded, dtype: torch.dtype) -> Tensor: ...


CODECS: Registry[ValueCodec] = Registry("value codec")


def channel_scales(w: Tensor) -> Tensor:
    """Per-output-channel symmetric int8 scales, float32 ``[w.shape[0]]``: s_c = max |w[c]| / 127."""
    if w.dim() < 2:
        raise ValueError(f"per-channel scales need a tensor with dim >= 2; got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("cannot int8-quantise a tensor with inf/NaN values")
    return (w.detach().abs().flatten(1).amax(dim=1).to(torch.float32) / INT8_MAX)


def quantize_symmetric(w: Tensor, scale: Tensor) -> Tensor:
    """q = clamp(round(w / s_c), -127, 127) as int8; ``scale`` is ``[w.shape[0]]``; s_c = 0 gives q = 0.

    The division is done in float64 so that round() sees w / s_c without an extra float32 rounding.
    """
    s = scale.to(torch.float64).view(-1, *([1] * (w.dim() - 1)))
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(w.detach().to(torch.float64) / safe).clamp_(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8)


def dequantize_symmetric(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """W^ = q * s_c, computed in float32 and cast to ``dtype``."""
    s = scale.to(torch.float32).view(-1, *([1] * (q.dim() - 1)))
    return (q.to(torch.float32) * s).to(dtype)


def fake_quantize_per_channel(w: Tensor) -> Tensor:
    """dq(q(w)) with per-output-channel symmetric int8 scales; same dtype and shape as ``w``."""
    scale = channel_scales(w)
    return dequantize_symmetric(quantize_symmetric(w, scale), scale, w.dtype)


@CODECS.register("raw")
class RawCodec:
    """The tensor's own dtype and bytes (lossless)."""

    def storage_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype

    def extras_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[torch.dtype, int]]:
        return {}

    def encode(self, t: Tensor) -> Encoded:
        return Encoded(t)

    def decode(self, enc: Encoded, dtype: torch.dtype) -> Tensor:
        return enc.data


@CODECS.register("fp16")
class Fp16Codec:
    """IEEE half precision; refuses finite values that would overflow to inf."""

    def storage_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float16

    def extras_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[torch.dtype, int]]:
        return {}

    def encode(self, t: Tensor) -> Encoded:
        finite = t[torch.isfinite(t)]
        if finite.numel() and float(finite.abs().max()) > FP16_MAX:
            raise ValueError(f"value {float(finite.abs().max()):.6g} overflows fp16 (max {FP16_MAX:g})")
        return Encoded(t.to(torch.float16))

    def decode(self, enc: Encoded, dtype: torch.dtype) -> Tensor:
        return enc.data.to(dtype)


@CODECS.register("int8")
class Int8ChannelCodec:
    """Symmetric int8 with one float32 scale per output channel (dim 0); tensors with dim >= 2 only."""

    def storage_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.int8

    def extras_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[torch.dtype, int]]:
        if len(shape) < 2:
            raise ValueError(f"int8 codec needs dim >= 2; got shape {list(shape)}")
        return {"scale": (torch.float32, shape[0])}

    def encode(self, t: Tensor) -> Encoded:
        scale = channel_scales(t)
        return Encoded(quantize_symmetric(t, scale), {"scale": scale})

    def decode(self, enc: Encoded, dtype: torch.dtype) -> Tensor:
        return dequantize_symmetric(enc.data, enc.extras["scale"], dtype)

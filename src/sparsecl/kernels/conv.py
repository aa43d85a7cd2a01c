"""``SparseConv2d``: direct sparse convolution on CPU, weights stored in CSR form.

Method: Park et al., 2017, "Faster CNNs with Direct Sparse Convolutions and Guided Pruning" (ICLR):
each output channel r is a sparse row over (ci, kh, kw), and

    y[n, r, ho, wo] = b[r] + sum_{(ci, kh, kw) active in row r} W[r, ci, kh, kw] * xpad[n, ci, ho+kh, wo+kw]

is computed directly, without im2col. Deviation: activations are laid out batch-innermost,
[C, Hpad, Wpad, Np] with the batch padded to Np = 16 * ceil(N / 16), so that every multiply-add is a
16-lane vector over the batch (Park et al. vectorise over output width); 8 such vectors (4 output positions
x 32 images) stay in registers across a row's nonzeros. Activations move between the network's
[N, C, H, W] and this layout in native blocked transposes (``NativeKernels.to_planes`` / ``from_planes``,
which also write the zero border; 2.4-4.0x / 1.5-2.0x faster than torch's permuted copies on ResNet-18's
maps, ``python benchmarks/bench_kernels.py --layout``), and the outputs come back contiguous. The backward pass uses the same kernel:

    grad x   = the same sparse convolution of grad y, padded by (K-1-p), with the transposed and flipped
               structure (rows ci, entries (r, K-1-kh, K-1-kw), values[perm]);
    grad W   = at the nonzeros only: sum_{n, ho, wo} gy[n, r, ho, wo] * xpad[n, ci, ho+kh, wo+kw].

Strided convolutions (the same stride S along both axes) read the input at (S ho, S wo); their input
gradient is a scatter into the padded input frame, one input channel per thread (instead of a stride-1
convolution over a zero-dilated gradient, which would multiply S^2 - 1 zeros for every product).

Supported: equal strides, dilation 1, groups 1, zero padding p <= K-1, float32 on CPU with the native kernels.
Anything else (or ``backend="torch"``) runs the masked dense path inside the module: F.conv2d on the
weight scattered from ``values`` (correct gradients at the active positions, no speed-up).

Measured speed-ups over dense conv (ResNet-18 CIFAR 3x3 layers, batch 32, 2 threads): see the docstring
of ``kernels.paths`` (2.1-2.5x at density 0.10, 2.6-4.2x at 0.05).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.kernels.base import CsrWeightModule
from sparsecl.kernels.csr import CsrStructure
from sparsecl.kernels.native import native_kernels


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    padding: tuple[int, int]
    stride: int = 1  # the same along both axes

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        s, (kh, kw), (ph, pw) = self.stride, self.kernel, self.padding
        return (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1


def conv_supported(conv: nn.Conv2d) -> bool:
    """Whether the direct sparse kernel covers this convolution's geometry."""
    return (
        conv.stride[0] == conv.stride[1] >= 1
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(0 <= p <= k - 1 for p, k in zip(conv.padding, conv.kernel_size))
    )


def _split_cols(col: torch.Tensor, kernel: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Column index of the [out, in*KH*KW] matrix -> (ci, kh, kw)."""
    col = col.long()
    kk = kernel[0] * kernel[1]
    return col // kk, (col % kk) // kernel[1], col % kernel[1]


def forward_offsets(s: CsrStructure, kernel: tuple[int, int], hp: int, wp: int) -> torch.Tensor:
    """off[k] = ci*Hp*Wp + kh*Wp + kw: where nonzero k reads the padded input (in [Np]-blocks)."""
    ci, kh, kw = _split_cols(s.col, kernel)
    return (ci * hp * wp + kh * wp + kw).int()


def _channel_rows(s: CsrStructure, kernel: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W^T grouped by input channel: (crow, kh, kw). W^T's CSR rows are the columns (ci, kh, kw) of W,
    sorted by ci first, so the rows of input channel ci are t_crow[ci*KK] .. t_crow[(ci+1)*KK]; entry e of
    W^T is nonzero perm[e] of W (output channel t_col[e]), at kernel position (kh[e], kw[e])."""
    _, kh, kw = _split_cols(s.col.index_select(0, s.perm), kernel)
    return s.t_crow[:: kernel[0] * kernel[1]].contiguous(), kh, kw


def scatter_structure(s: CsrStructure, kernel: tuple[int, int], out_hw: tuple[int, int], wq: int):
    """(crow, src, dst) of the strided input-gradient scatter: W^T's rows per input channel, the gy plane
    of each entry (r Ho Wo) and its (kh, kw) place in the padded input frame (kh Wq + kw)."""
    crow, kh, kw = _channel_rows(s, kernel)
    src = s.t_col.long() * (out_hw[0] * out_hw[1])
    return crow, src.int(), (kh * wq + kw).int()


def grad_input_structure(s: CsrStructure, kernel: tuple[int, int], hq: int, wq: int):
    """(crow, off) of the transposed, flipped convolution that maps grad y to grad x: rows per input
    channel (:func:`_channel_rows`), entry e reading gy plane t_col[e] at the flipped (K-1-kh, K-1-kw)."""
    crow, kh, kw = _channel_rows(s, kernel)
    off = s.t_col.long() * hq * wq + (kernel[0] - 1 - kh) * wq + (kernel[1] - 1 - kw)
    return crow, off.int()


class _IndexCache:
    """The integer index arrays derived from a structure for one input geometry (offsets, transposed
    structures), kept for the most recent structures: they depend only on the mask and the shapes, so a
    training step reuses them instead of re-deriving them. Keyed by the structure's identity and the version
    counters of its index tensors (an in-place change, e.g. ``load_state_dict``, misses); holding the
    structure keeps its identity unambiguous; the bound keeps superseded masks from accumulating."""

    def __init__(self, size: int = 48) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[CsrStructure, Any]] = OrderedDict()

    def get(self, s: CsrStructure, key: tuple, make: Callable[[], Any]) -> Any:
        k = (id(s), *(t._version for t in (s.crow, s.col, s.t_crow, s.t_col, s.perm)), *key)
        hit = self._entries.get(k)
        if hit is not None and hit[0] is s:
            self._entries.move_to_end(k)
            return hit[1]
        value = make()
        self._entries[k] = (s, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


_INDEX_CACHE = _IndexCache()


class SparseConv2dFunction(torch.autograd.Function):
    """``apply(x, values, bias, structure, geometry) -> y`` with the native kernels (float32, CPU)."""

    @staticmethod
    def forward(ctx: Any, x, values, bias, s: CsrStructure, geom: ConvGeometry):  # type: ignore[override]
        k = native_kernels()
        n, _, h, w = x.shape
        np_ = 16 * math.ceil(n / 16)
        xp = k.to_planes(x, geom.padding, np_)
        hp, wp = xp.shape[1], xp.shape[2]
        off = _INDEX_CACHE.get(s, ("fwd", geom.kernel, hp, wp), lambda: forward_offsets(s, geom.kernel, hp, wp))
        b = None if bias is None else bias.detach().contiguous()
        y = k.conv_t(s.crow, off, values.detach().contiguous(), xp, geom.out_hw(h, w), b, geom.stride)
        ctx.save_for_backward(values, xp, off)
        ctx.s, ctx.geom, ctx.x_hw, ctx.n, ctx.has_bias = s, geom, (h, w), n, bias is not None
        return k.from_planes(y, n)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor):  # type: ignore[override]
        k = native_kernels()
        values, xp, off = ctx.saved_tensors
        s, geom, (h, w) = ctx.s, ctx.geom, ctx.x_hw
        gb = gy.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        if geom.stride != 1:
            return (*SparseConv2dFunction._strided_backward(ctx, k, gy, values, xp, off), gb, None, None)
        q = (geom.kernel[0] - 1 - geom.padding[0], geom.kernel[1] - 1 - geom.padding[1])
        gyp = k.to_planes(gy, q, xp.shape[3])
        gx = gv = None
        if ctx.needs_input_grad[0]:
            hq, wq = gyp.shape[1], gyp.shape[2]
            crow_t, off_t = _INDEX_CACHE.get(s, ("gx", geom.kernel, hq, wq),
                                             lambda: grad_input_structure(s, geom.kernel, hq, wq))
            values_t = values.detach().index_select(0, s.perm)
            gx = k.from_planes(k.conv_t(crow_t, off_t, values_t, gyp, (h, w), None), ctx.n)
        if ctx.needs_input_grad[1]:
            gv = k.conv_sddmm_t(s.crow, off, gyp, q, geom.out_hw(h, w), xp)
        return gx, gv, gb, None, None

    @staticmethod
    def _strided_backward(ctx: Any, k: Any, gy: torch.Tensor, values: torch.Tensor, xp: torch.Tensor,
                          off: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(grad x, grad W) for stride S > 1: grad x by scatter into the padded input frame (no
        zero-dilated gy, no wasted products), grad W by the strided SDDMM; both on the unpadded gy planes."""
        s, geom, (h, w) = ctx.s, ctx.geom, ctx.x_hw
        gyp = k.to_planes(gy, (0, 0), xp.shape[3])
        out_hw = (gyp.shape[1], gyp.shape[2])
        gx = gv = None
        if ctx.needs_input_grad[0]:
            wq = xp.shape[2]
            crow_t, src, dst = _INDEX_CACHE.get(s, ("scatter", geom.kernel, out_hw, wq),
                                                lambda: scatter_structure(s, geom.kernel, out_hw, wq))
            gxp = k.conv_scatter_t(crow_t, src, dst, values.detach().index_select(0, s.perm), gyp,
                                   (xp.shape[1], xp.shape[2]), geom.stride)
            gx = k.from_planes(gxp, ctx.n, crop=(geom.padding[0], geom.padding[1], h, w))
        if ctx.needs_input_grad[1]:
            gv = k.conv_sddmm_t(s.crow, off, gyp, (0, 0), out_hw, xp, geom.stride)
        return gx, gv


class SparseConv2d(CsrWeightModule):
    """nn.Conv2d whose weight [out, in, KH, KW] is stored as CSR values + indices.

    ``backend``: "auto" (native direct sparse convolution where it applies, else the masked dense
    fallback), "native" (raises where it does not apply), "torch" (always the masked dense fallback).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        mask: torch.Tensor,
        padding: tuple[int, int] = (0, 0),
        bias: bool = True,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        stride: int = 1,
    ) -> None:
        super().__init__((out_channels, in_channels, *kernel_size), mask, bias, dtype, backend)
        if not all(0 <= p <= k - 1 for p, k in zip(padding, kernel_size)):
            raise ValueError(f"padding {padding} must lie in [0, kernel-1] for kernel {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.geometry = ConvGeometry(tuple(kernel_size), tuple(padding), int(stride))

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, mask: torch.Tensor, backend: str = "auto") -> "SparseConv2d":
        if not conv_supported(conv):
            raise ValueError("SparseConv2d needs equal strides, dilation 1, groups 1 and zero padding <= kernel-1")
        w = conv.weight
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, mask.to(w.device), conv.padding,
                    conv.bias is not None, w.dtype, backend, conv.stride[0])
        layer._load_dense(w, mask, conv.bias)
        return layer

    def to_dense_module(self) -> nn.Conv2d:
        """An equivalent dense nn.Conv2d (weight = ``to_dense()``)."""
        v = self.values
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.geometry.kernel, stride=self.geometry.stride,
                         padding=self.geometry.padding, bias=self.bias is not None, device=v.device, dtype=v.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        return conv

    def uses_native(self) -> bool:
        ok = self.values.dtype == torch.float32 and self.values.device.type == "cpu" and native_kernels() is not None
        if self.backend == "native" and not ok:
            raise ValueError(f"native sparse convolution does not apply to {self.values.dtype} on {self.values.device}")
        return ok and self.backend != "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_native():
            return SparseConv2dFunction.apply(x, self.values, self.bias, self.structure, self.geometry)
        # masked dense fallback: scatter the values into a dense weight (differentiable w.r.t. values)
        flat = self.structure.flat_index()
        w = self.values.new_zeros(math.prod(self.weight_shape)).index_put((flat,), self.values)
        return F.conv2d(x, w.view(self.weight_shape), self.bias, stride=self.geometry.stride,
                        padding=self.geometry.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.geometry.kernel}, "
            f"stride={self.geometry.stride}, padding={self.geometry.padding}, nnz={self.nnz}, density={self.density:.4f}, backend={self.backend}"
        )

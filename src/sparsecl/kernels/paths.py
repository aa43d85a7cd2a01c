"""Per-layer choice of execution path: "csr" (SparseLinear / SparseConv2d) or "masked" (dense weights
times a mask, kept as nn.Linear / nn.Conv2d for the mask engine).

Linear layers (:func:`choose_path`):

``choose_path`` compares two fitted step-time models (ms for one layer's forward + backward + SGD-momentum
step, input gradient included):

    masked(o, i, B)      = a_m + b_m * o*i + c_m * o*i*B            (3 GEMMs + mask/optimizer passes)
    csr(o, i, B, nnz)    = a_c + b_c * nnz + c_c * nnz*B + e_c * (o+i)*B
                           (SpMM, transposed SpMM, SDDMM + O(nnz) optimizer + per-activation copies)

and picks csr only when ``MARGIN * csr < masked`` and ``density <= MAX_CSR_DENSITY``. Constants were fitted
(least squares on relative error) to ``benchmarks/bench_kernels.py --calibrate``: 4 shapes (256x256,
1000x784, 1000x1000, 2000x2000) x batch 8/32/128/512 x density 0.5..0.01 x 1/2 threads, per backend, on
an AMD EPYC (AVX-512) with 2 cores shared with other jobs (noisy; best of 3 interleaved medians).
Thread counts above 2 use the 2-thread constants (not measured).

Measured crossover: the highest density at and below which csr beat masked on every grid point, with
the csr speed-up over masked at density 0.10 / 0.05 in brackets (2 threads):

    native backend | B=8            | B=32           | B=128          | B=512
    256x256        | 0.2 (1.2/1.2)  | 0.5 (1.8/1.5)  | 0.3 (2.1/2.1)  | 0.5 (2.6/3.2)
    1000x784       | 0.3 (3.7/5.1)  | 0.5 (5.4/6.8)  | 0.5 (4.5/7.3)  | 0.3 (3.0/4.5)
    1000x1000      | 0.5 (4.6/5.8)  | 0.5 (5.1/6.8)  | 0.5 (4.4/7.9)  | 0.3 (3.1/4.6)
    2000x2000      | 0.5 (5.7/12.0) | 0.3 (5.9/11.8) | 0.3 (3.9/7.2)  | 0.3 (3.0/5.6)
    torch backend  |                |                |                |
    256x256        | 0.1 (1.0/1.1)  | 0.2 (1.0/1.2)  | 0.02 (1.2/1.0) | 0.1 (1.3/2.0)
    1000x784       | 0.3 (3.5/5.1)  | 0.3 (3.5/5.3)  | 0.2 (2.3/4.0)  | 0.1 (1.4/2.9)
    1000x1000      | 0.3 (4.4/5.5)  | 0.3 (3.5/5.3)  | 0.2 (2.2/3.7)  | 0.1 (1.7/2.9)
    2000x2000      | 0.3 (5.0/10.0) | 0.3 (4.2/7.5)  | 0.2 (2.0/3.7)  | 0.1 (1.8/3.2)

At density 0.5 csr lost somewhere in every row (0.6-1.0x), hence the 0.3 cap. With MARGIN = 1.25 and
the cap, the models never chose csr at a measured point where csr was slower, except torch/2 threads
256x256 B=128 d=0.05 (0.99x, inside the noise: its neighbours at 0.10 and 0.02 won by 1.2x and 1.8x).

Convolutions (:func:`choose_conv_path`): csr needs a geometry the direct kernel covers (equal strides,
see ``kernels.conv``) and the native kernels; then it is chosen for density <= CONV_MAX_DENSITY (stride 1)
or STRIDED_CONV_MAX_DENSITY (stride > 1). Measured,
2 threads, one 3x3 ResNet-18 CIFAR layer (C->C, padding 1), forward + backward, versus dense conv, batch
32, C=64/128/256/512 at 32/16/8/4 px, with the native layout moves (``python benchmarks/bench_kernels.py
--conv --densities 0.3 0.2 0.1 0.05``): 3.2-4.1x at density 0.05, 2.1-3.8x at 0.10, 1.38-1.67x at 0.20,
1.04-1.21x at 0.30 (hence the cap at 0.20: every layer at least 1.38x there in that run, 1.15x in a
noisier one). The stride-2 3x3 convs opening stages 2-4 (64->128 at 32 px, 128->256, 256->512): 2.8-3.1x at
0.05, 1.6-2.0x at 0.10, 1.10-1.16x at 0.20 (hence their lower cap, 0.15). Before the native layout moves
(torch's permuted copies): batch 8: 1.6x at 0.10; batch 128 (C=512): 2.4x at 0.10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sparsecl.kernels.backends import BACKEND_CHOICES
from sparsecl.kernels.conv import SparseConv2d, conv_supported
from sparsecl.kernels.gpu import choose_gpu_path
from sparsecl.kernels.linear import SparseLinear
from sparsecl.kernels.native import native_kernels
from sparsecl.registry import Registry

MARGIN = 1.25
MAX_CSR_DENSITY = 0.3
CONV_MAX_DENSITY = 0.2
STRIDED_CONV_MAX_DENSITY = 0.15


@dataclass(frozen=True)
class CostModel:
    """Fitted per-step times in ms (see the module docstring for the two formulas)."""

    masked: tuple[float, float, float]  # a_m, b_m, c_m
    csr: tuple[float, float, float, float]  # a_c, b_c, c_c, e_c

    def masked_ms(self, out_f: int, in_f: int, batch: int) -> float:
        a, b, c = self.masked
        return a + b * out_f * in_f + c * out_f * in_f * batch

    def csr_ms(self, out_f: int, in_f: int, batch: int, nnz: float) -> float:
        a, b, c, e = self.csr
        return a + b * nnz + c * nnz * batch + e * (out_f + in_f) * batch


# (kernel backend, threads) -> fitted model; see the module docstring for how they were measured.
COST_MODELS: dict[tuple[str, int], CostModel] = {
    ("native", 1): CostModel((0.094, 3.46e-6, 6.68e-8), (0.242, 4.77e-6, 1.50e-7, 1.68e-6)),
    ("native", 2): CostModel((0.132, 2.92e-6, 6.75e-8), (0.239, 4.26e-6, 1.43e-7, 1.51e-6)),
    ("torch", 1): CostModel((0.091, 3.47e-6, 6.74e-8), (0.275, 4.29e-6, 3.30e-7, 2.88e-6)),
    ("torch", 2): CostModel((0.117, 3.03e-6, 6.70e-8), (0.276, 3.32e-6, 3.22e-7, 2.49e-6)),
}


def to_csr(layer: nn.Module, mask: torch.Tensor, backend: str) -> nn.Module:
    """The CSR module equivalent to ``layer`` (nn.Linear -> SparseLinear, nn.Conv2d -> SparseConv2d)."""
    if isinstance(layer, nn.Linear):
        return SparseLinear.from_dense(layer, mask, backend)
    if isinstance(layer, nn.Conv2d):
        return SparseConv2d.from_dense(layer, mask, backend)
    raise TypeError(f"no CSR module for {type(layer).__name__}")


# What each path does to a masked layer: csr swaps in the CSR module, masked keeps the layer (the mask
# engine multiplies weights and gradients by the mask).
PATHS: Registry[Callable[[nn.Module, torch.Tensor, str], nn.Module]] = Registry("execution path")
PATHS.register("csr")(to_csr)
PATHS.register("masked")(lambda layer, mask, backend: layer)
PATH_CHOICES = ("auto", *PATHS.names())


def _validate(path: str, density: float, backend: str) -> None:
    if path not in PATH_CHOICES:
        raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATH_CHOICES)}")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKEND_CHOICES)}")


def cost_model(threads: int, backend: str = "auto") -> CostModel:
    """The fitted model for a thread count and backend ("auto": native where it compiles)."""
    if backend == "auto":
        backend = "native" if native_kernels() is not None else "torch"
    return COST_MODELS[(backend, 1 if threads <= 1 else 2)]


def choose_path(
    out_features: int,
    in_features: int,
    batch: int,
    density: float,
    threads: int | None = None,
    path: str = "auto",
    backend: str = "auto",
    device: str = "cpu",
) -> str:
    """"csr" or "masked" for one nn.Linear; ``path`` other than "auto" is returned as is (validated).

    ``threads`` defaults to ``torch.get_num_threads()``; ``backend`` is the one the layer will use. The cost
    models are CPU measurements: a layer on a GPU (``device`` "cuda") takes torch's CSR only where
    :func:`sparsecl.kernels.gpu.choose_gpu_path` (the H100 probes) picks cuSPARSE for a non-2:4 weight;
    everything else runs the dense product.
    """
    _validate(path, density, backend)
    if path != "auto":
        return path
    if device != "cpu":
        gpu = choose_gpu_path(out_features, in_features, batch, density, two_four=False)
        return "csr" if gpu == "csr" else "masked"
    if density > MAX_CSR_DENSITY:
        return "masked"
    model = cost_model(threads or torch.get_num_threads(), backend)
    nnz = density * out_features * in_features
    csr = model.csr_ms(out_features, in_features, batch, nnz)
    masked = model.masked_ms(out_features, in_features, batch)
    return "csr" if MARGIN * csr < masked else "masked"


def choose_conv_path(conv: nn.Conv2d, density: float, path: str = "auto", backend: str = "auto") -> str:
    """"csr" or "masked" for one nn.Conv2d.

    A geometry the direct kernel does not cover (unequal strides, groups, dilation) is "masked" whatever ``path``
    says; so is everything when the native kernels are unavailable or ``backend="torch"``, because the
    conv fallback inside SparseConv2d is the masked dense computation itself.
    """
    _validate(path, density, backend)
    native = backend != "torch" and native_kernels() is not None
    if path == "masked" or not conv_supported(conv) or not native:
        return "masked"
    cap = CONV_MAX_DENSITY if conv.stride[0] == 1 else STRIDED_CONV_MAX_DENSITY
    return "csr" if path == "csr" or density <= cap else "masked"

"""Sparse inference of Linear layers on a CUDA GPU: 2:4 semi-structured and CSR, chosen per layer.

Two torch facilities, no kernels of our own:

* ``semi-structured``: ``torch.sparse.to_sparse_semi_structured`` (sparse tensor cores, compute capability
  8.0+; cuSPARSELt where the build has it, else CUTLASS). The weight must have at most 2 nonzeros in every
  group of 4 consecutive input-dimension entries (train with ``sparsity.pattern=n:m``, the default 2:4),
  a dtype the backend takes (float16 / bfloat16 / int8; float32 on CUTLASS) and a shape that is a multiple
  of the backend's block (e.g. 16 x 16 for float16 on cuSPARSELt, 32 x 64 on CUTLASS).
* ``csr``: the weight as a ``torch.sparse_csr`` tensor, ``y = (W x^T)^T`` through cuSPARSE SpMM
  (:class:`TorchCsrLinear`; on CPU it runs MKL's, which is what the tests check numerically).

Choice (:func:`choose_gpu_path`), by pattern, shape and density. The thresholds are the probes of the
issue "real speed", measured on an H100 with torch's kernels, not fitted here (this project's CI has no GPU):
2:4 was 1.45x faster than dense at 8192 x 8192 x 8192 in float16 and slower on small shapes, so it is
chosen only when every one of out, in and the batch is at least ``SEMI_MIN_DIM`` (4096); CSR was 1.4x at
density 0.05 and 4.2x at 0.01 on 4096 x 4096, so it is chosen at density <= ``GPU_CSR_MAX_DENSITY`` (0.05)
for layers of at least ``GPU_CSR_MIN_NUMEL`` (4096 x 4096) weights. ``benchmarks/bench_gpu_kernels.py``
prints the measured speed-ups per shape on the GPU at hand, the numbers to check these against.
Everything else stays dense. Inference only: the converted layers carry no gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from sparsecl.registry import Registry

SEMI_MIN_DIM = 4096
GPU_CSR_MAX_DENSITY = 0.05
GPU_CSR_MIN_NUMEL = 4096 * 4096
GPU_PATH_CHOICES = ("auto", "dense", "semi-structured", "csr")


def is_2to4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive entries along the last dimension has <= 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def _semi_structured_class() -> type:
    """The subclass ``to_sparse_semi_structured`` would build: cuSPARSELt when available, else CUTLASS."""
    from torch.sparse import SparseSemiStructuredTensor
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    cusparselt = getattr(torch.backends, "cusparselt", None)
    if SparseSemiStructuredTensor._FORCE_CUTLASS or cusparselt is None or not cusparselt.is_available():
        return SparseSemiStructuredTensorCUTLASS
    return SparseSemiStructuredTensorCUSPARSELT


def semi_structured_problem(weight: torch.Tensor, capability: tuple[int, int] | None = None) -> str | None:
    """Why ``weight`` cannot run as a 2:4 semi-structured tensor, or None if it can.

    ``capability`` defaults to the weight's CUDA device's; pass it to ask about a device not at hand.
    """
    if capability is None:
        if weight.device.type != "cuda":
            return f"needs a CUDA device (weight on {weight.device.type})"
        capability = torch.cuda.get_device_capability(weight.device)
    if tuple(capability) < (8, 0):
        return f"needs compute capability 8.0+ for sparse tensor cores, device has {capability[0]}.{capability[1]}"
    if weight.dim() != 2:
        return f"needs a 2-d weight, got {weight.dim()}-d"
    if not is_2to4(weight):
        return "weight is not 2:4 sparse (train with sparsity.pattern=n:m, nm_n=2, nm_m=4)"
    cls = _semi_structured_class()
    limits = cls._DTYPE_SHAPE_CONSTRAINTS.get(weight.dtype)
    if limits is None:
        return f"{cls.BACKEND} takes {', '.join(str(d) for d in cls._DTYPE_SHAPE_CONSTRAINTS)}, not {weight.dtype}"
    rows, cols = weight.shape
    if rows % limits.sparse_min_rows or cols % limits.sparse_min_cols:
        return (f"{cls.BACKEND} needs shapes that are multiples of ({limits.sparse_min_rows}, "
                f"{limits.sparse_min_cols}) for {weight.dtype}, got {tuple(weight.shape)}")
    return None


def choose_gpu_path(out_features: int, in_features: int, batch: int, density: float, two_four: bool,
                    path: str = "auto") -> str:
    """"dense" | "semi-structured" | "csr" for one Linear at inference (see the module docstring)."""
    if path not in GPU_PATH_CHOICES:
        raise ValueError(f"unknown GPU path {path!r}; valid: {', '.join(GPU_PATH_CHOICES)}")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if path != "auto":
        return path
    if two_four and min(out_features, in_features, batch) >= SEMI_MIN_DIM:
        return "semi-structured"
    if density <= GPU_CSR_MAX_DENSITY and out_features * in_features >= GPU_CSR_MIN_NUMEL:
        return "csr"
    return "dense"


class TorchCsrLinear(nn.Module):
    """Inference Linear with its weight as a ``torch.sparse_csr`` tensor: ``y = (W x^T)^T + b``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():  # torch flags its sparse CSR layout as beta on every conversion
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            csr = weight.detach().to_sparse_csr()
        self.register_buffer("weight", csr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> TorchCsrLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.weight.values().numel()}, bias={self.bias is not None}")


def _semi_structured(linear: nn.Linear) -> nn.Module:
    problem = semi_structured_problem(linear.weight)
    if problem is not None:
        raise ValueError(f"semi-structured: {problem}")
    sparse = _semi_structured_class().from_dense(linear.weight.detach().contiguous())
    linear.weight = nn.Parameter(sparse, requires_grad=False)
    return linear


# path -> what it does to an nn.Linear (returns the module to use in its place)
GPU_PATHS: Registry[Callable[[nn.Linear], nn.Module]] = Registry("GPU inference path")
GPU_PATHS.register("dense")(lambda linear: linear)
GPU_PATHS.register("semi-structured")(_semi_structured)
GPU_PATHS.register("csr")(TorchCsrLinear.from_linear)


def sparsify_for_gpu(model: nn.Module, batch: int, path: str = "auto",
                     skip: Callable[[str, nn.Linear], bool] | None = None) -> dict[str, str]:
    """Convert, in place, the model's nn.Linear layers for inference at ``batch`` rows per call.

    Call after moving the model to its CUDA device and dtype. ``path`` "auto" chooses per layer
    (:func:`choose_gpu_path`; an "auto" 2:4 choice the device or dtype cannot run stays dense); a forced
    path is applied to every Linear and raises ValueError where it cannot run. ``skip(name, layer)``
    keeps layers dense (e.g. a classifier). Layers switched to the CPU training path's CSR execution
    (``kernels.execution``) are switched back to nn.Linear first. Returns ``{layer name: path}``.
    """
    from sparsecl.kernels.convert import _replace  # here: convert -> paths -> this module
    from sparsecl.kernels.execution import disable_sparse_execution

    disable_sparse_execution(model)
    chosen: dict[str, str] = {}
    for name, layer in list(model.named_modules()):
        if type(layer) is not nn.Linear or (skip is not None and skip(name, layer)):
            continue
        w = layer.weight.detach()
        density = float((w != 0).sum()) / w.numel()
        choice = choose_gpu_path(layer.out_features, layer.in_features, batch, density, is_2to4(w), path)
        if path == "auto" and choice == "semi-structured" and semi_structured_problem(w) is not None:
            choice = "dense"
        new = GPU_PATHS.get(choice)(layer)
        if new is not layer:
            _replace(model, name, new)
        chosen[name] = choice
    return chosen


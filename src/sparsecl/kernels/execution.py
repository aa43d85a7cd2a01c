"""Sparse execution in training: the mask engine's Linear / Conv2d layers compute through the CSR kernels.

``sparsity.execution`` = ``masked`` (dense weight x mask, every product dense), ``csr`` (every eligible
layer through ``kernels.function`` / ``kernels.conv``) or ``auto`` (per layer and per mask: the fitted
cost model of ``kernels.paths`` decides from shape, forward batch, density and threads; a layer whose
mask is all ones always runs dense).

Dense-backed. The engine's dense weight stays the one source of truth, so masks, SparCL's importance
scores, checkpoints, resume and export are those of the masked path. A CSR step does

    y      = W_csr x                           O(nnz B): SpMM / direct sparse convolution
    grad x = W_csr^T grad y                    O(nnz B)
    grad W = SDDMM(grad y, x) at the actives   O(nnz B), written into a zeroed dense gradient (O(out in))

with W's active values read from the dense weight (gathered in CSR order; Linear layers on the native
kernels read them in place: ``FusedCsrLinear``, one autograd node and one native call per direction,
transposes included), and the optimizer updates the dense tensor, whose inactive entries get exact-zero
gradients (so under SGD / Adam / AdamW they stay exactly 0, as on the masked path). The O(out in) work
left per step (zero fill, the engine's gradient mask, the optimizer update) is 1/B of one dense product.
Deviation from the values-only ``SparseLinear`` / ``SparseConv2d`` (export, inference,
``benchmarks/bench_kernels.py``): weight and optimizer memory stay dense on this path; only the products
shrink.

Dense-gradient steps. Consumers that read gradients of INACTIVE weights (RigL / SNFS in their update
windows: ``MaskEngine.needs_dense_grad``; SparCL TDM with gradient regrowth: ``Component.needs_dense_grad``)
get the dense product on exactly those steps, decided in the loop's ``before_forward`` moment, so they see
what the masked path gives them.

Layers are switched by changing their class in place to a subclass (``CsrLinear`` / ``CsrConv2d``), the
way FSDP2's ``fully_shard`` does: parameter names, the Parameter objects held by the optimizer and the
engine, state-dict keys and hooks all stay as they are. Only exact ``nn.Linear`` / ``nn.Conv2d`` are
switched (a subclass may have its own forward); convolutions need a geometry the direct kernel covers.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.kernels.conv import ConvGeometry, SparseConv2dFunction, conv_supported
from sparsecl.kernels.csr import CsrStructure, index_dtype, structure_from_mask
from sparsecl.kernels.function import sparse_linear
from sparsecl.kernels.native import native_kernels
from sparsecl.kernels.paths import PATH_CHOICES, choose_conv_path, choose_path
from sparsecl.contract import Component, LoopState

class GatherActive(torch.autograd.Function):
    """``values = weight.flatten()[flat]``; the backward scatters ``grad values`` into a dense zero
    gradient (``flat`` is unique: a plain ``index_copy_``, not an accumulating ``index_put_``)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(flat)
        ctx.shape = weight.shape
        return weight.detach().reshape(-1).index_select(0, flat)

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (flat,) = ctx.saved_tensors
        g = grad_values.new_zeros(math.prod(ctx.shape))
        return g.index_copy_(0, flat, grad_values).view(ctx.shape), None


class FusedCsrLinear(torch.autograd.Function):
    """``GatherActive`` + ``SparseLinearFunction`` on the native backend as ONE autograd node and one
    native call per direction (``NativeKernels.linear_fwd`` / ``linear_bwd``): the layout transposes, the
    SpMMs and the SDDMM of the composed path on the same operands in the same order (bit-identical), with
    the active values read from the dense weight at their flat positions (no gathered copy) and the weight
    gradient written straight into its dense zeroed tensor (no scatter), without the per-call backend
    resolution and argument checks. Used by :class:`CsrLinear` when its plan is ``fused`` (float32 CPU
    contiguous weight, native kernels, int32 indices: what those checks verify, once per structure).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                plan: "LayerPlan") -> torch.Tensor:
        s, flat, t_flat = plan.structure, plan.flat, plan.t_flat
        w = weight.detach()
        b = None if bias is None else bias.detach().contiguous()
        y, x_t = native_kernels().linear_fwd(s, flat, w, x.reshape(-1, s.shape[1]), b)
        # the weight is saved (not copied): an in-place change before the backward is autograd's error
        ctx.save_for_backward(weight, x_t)
        # the structure of THIS forward (a later rebuild of the plan must not change this backward)
        ctx.s, ctx.flat, ctx.t_flat = s, flat, t_flat
        ctx.x_shape, ctx.has_bias = x.shape, bias is not None
        return y.reshape(*x.shape[:-1], s.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        weight, x_t = ctx.saved_tensors
        gy = grad_y.reshape(-1, ctx.s.shape[0])
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw = native_kernels().linear_bwd(ctx.s, ctx.flat, ctx.t_flat, weight.detach(), gy, x_t, need_x, need_w)
        return (None if gx is None else gx.reshape(ctx.x_shape), gw,
                gy.sum(0) if ctx.has_bias and need_b else None, None)


class LayerPlan:
    """One layer's execution: the CSR structure of the engine's current mask, or None (run dense).

    ``source`` is the engine's ``SparseLayer`` (``mask``, ``count``, ``numel``); the engine replaces the
    mask tensor whenever it changes, so a changed identity triggers the rebuild (cheap, O(nnz log nnz)).
    """

    def __init__(self, source: Any, choose: Callable[[float], str], shared: "ExecutionFlags") -> None:
        self.source, self.choose, self.flags = source, choose, shared
        self._mask: torch.Tensor | None = None
        self.structure: CsrStructure | None = None
        self.flat: torch.Tensor | None = None
        self.t_flat: torch.Tensor | None = None  # flat positions in W^T's CSR order (the fused backward)
        self.path = "masked"
        self.rebuilds = 0
        self.fused = False  # CsrLinear may use FusedCsrLinear (set by SparseExecution)
        self.sparse_grad = False  # a CSR product with autograd on ran since the last reset: the weight's
        # gradient is zero off the mask (written at the active positions only)

    def current(self) -> CsrStructure | None:
        """The structure to compute with now, or None for the dense product."""
        mask = self.source.mask
        if mask is not self._mask:
            self._mask = mask
            density = self.source.count / self.source.numel
            self.path = "masked" if self.source.count == self.source.numel else self.choose(density)
            if self.path == "csr":
                self.structure = structure_from_mask(mask.reshape(mask.shape[0], -1))
                self.flat = self.structure.flat_index()
                self.t_flat = self.flat[self.structure.perm.long()]
                self.rebuilds += 1
            else:
                self.structure = self.flat = self.t_flat = None
        if self.structure is None or (self.flags.dense_step and torch.is_grad_enabled()):
            return None
        self.sparse_grad = self.sparse_grad or torch.is_grad_enabled()
        return self.structure


class ExecutionFlags:
    """State shared by every plan of one model: whether this step needs dense weight gradients."""

    def __init__(self) -> None:
        self.dense_step = False


class CsrLinear(nn.Linear):
    """An nn.Linear (same parameters) whose product runs through ``kernels.function`` when its plan says
    so; see the module docstring. Created only by :class:`SparseExecution`."""

    csr_plan: LayerPlan
    csr_backend: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.csr_plan.current()
        if s is None:
            return F.linear(x, self.weight, self.bias)
        if self.csr_plan.fused and x.dtype == torch.float32 and x.device.type == "cpu":  # else: checked path
            return FusedCsrLinear.apply(x, self.weight, self.bias, self.csr_plan)
        return sparse_linear(x, GatherActive.apply(self.weight, self.csr_plan.flat), self.bias, s, self.csr_backend)


class CsrConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters) running the direct sparse convolution of ``kernels.conv`` when its
    plan says so. Created only by :class:`SparseExecution`."""

    csr_plan: LayerPlan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.csr_plan.current()
        if s is None:
            return super().forward(x)
        values = GatherActive.apply(self.weight, self.csr_plan.flat)
        geom = ConvGeometry(tuple(self.kernel_size), tuple(self.padding), self.stride[0])
        return SparseConv2dFunction.apply(x, values, self.bias, s, geom)


def _linear_chooser(layer: nn.Linear, mode: str, batch: int, backend: str) -> Callable[[float], str]:
    device = layer.weight.device.type
    return lambda d: choose_path(layer.out_features, layer.in_features, batch, d, None, mode, backend, device)


def _conv_chooser(layer: nn.Conv2d, mode: str, batch: int, backend: str) -> Callable[[float], str]:
    return lambda d: choose_conv_path(layer, d, mode, backend)


def _conv_eligible(layer: nn.Conv2d) -> bool:
    w = layer.weight
    return conv_supported(layer) and w.dtype == torch.float32 and w.device.type == "cpu" and native_kernels() is not None


# exact module type -> (CSR subclass, chooser factory, eligibility)
_SWITCHABLE: dict[type, tuple[type, Callable[..., Callable[[float], str]], Callable[[nn.Module], bool]]] = {
    nn.Linear: (CsrLinear, _linear_chooser, lambda m: True),
    nn.Conv2d: (CsrConv2d, _conv_chooser, _conv_eligible),
}


def _plain_type(module: nn.Module | None) -> type | None:
    """The switchable base class of ``module`` (an already switched layer counts as its base), or None."""
    for base, (cls, _, _) in _SWITCHABLE.items():
        if type(module) in (base, cls):
            return base
    return None


class SparseExecution(Component):
    """Switches the engine's layers to CSR execution and decides, before every forward, whether the step
    needs dense weight gradients (see the module docstring).

    ``mode``: "auto" | "csr" | "masked"; ``batch``: the examples one forward carries (current batch plus
    fused replay draws), for the cost model; ``consumers``: the run's other components, asked through
    ``needs_dense_grad``.
    """

    def __init__(self, model: nn.Module, engine: Any, mode: str, batch: int, backend: str = "auto",
                 consumers: list[Component] | None = None) -> None:
        if mode not in PATH_CHOICES:
            raise ValueError(f"sparsity.execution must be one of {', '.join(PATH_CHOICES)}, got {mode!r}")
        self.engine, self.consumers = engine, list(consumers or [])
        self.flags = ExecutionFlags()
        self.plans: dict[str, LayerPlan] = {}
        self._weights: dict[str, nn.Parameter] = {}
        if mode == "masked":
            disable_sparse_execution(model)
            return
        modules = dict(model.named_modules())
        for layer in engine.layers:
            module_name, _, leaf = layer.name.rpartition(".")
            module = modules.get(module_name)
            entry = _SWITCHABLE.get(_plain_type(module))
            if leaf != "weight" or entry is None or not entry[2](module):
                continue
            cls, chooser, _ = entry
            module.__class__ = cls
            plan = LayerPlan(layer, chooser(module, mode, batch, backend), self.flags)
            if cls is CsrLinear and backend in ("auto", "native"):
                w = module.weight
                plan.fused = (native_kernels() is not None and w.dtype == torch.float32 and w.device.type == "cpu"
                              and w.is_contiguous() and index_dtype(tuple(w.shape)) == torch.int32)
            module.csr_plan = plan
            module.csr_backend = backend
            self.plans[module_name] = module.csr_plan
            self._weights[module_name] = module.weight

    def before_forward(self, state: LoopState, batch: Any) -> None:
        # decided on every step, CSR plans or not: the FLOPs meter charges dense weight gradients by it
        self.flags.dense_step = self.engine.needs_dense_grad() or any(
            c.needs_dense_grad(state) for c in self.consumers)
        for plan in self.plans.values():
            plan.sparse_grad = False

    def after_backward(self, state: LoopState, batch: Any, out: Any) -> None:
        # a gradient the CSR backward wrote is already zero off the weight mask: the engine's dense
        # ``grad *= mask`` would change nothing, so the coming step skips it for these weights
        done = [self._weights[name] for name, plan in self.plans.items() if plan.sparse_grad]
        if done:
            self.engine.premasked(done)

    def paths(self) -> dict[str, str]:
        """Layer -> "csr" | "masked" for the current masks (what ``summary.json`` reports)."""
        for plan in self.plans.values():
            plan.current()
        return {name: plan.path for name, plan in self.plans.items()}


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every CSR-executing layer as its plain class: same parameters and
    buffers (copied), no link to the mask engine, so it computes densely whatever the engine does next
    (a frozen earlier model, e.g. iCaRL's distillation target)."""
    plans = [m.csr_plan for m in model.modules() if hasattr(m, "csr_plan")]
    copy_ = copy.deepcopy(model, memo={id(p): None for p in plans})  # never copy the engine behind a plan
    disable_sparse_execution(copy_)
    return copy_


def disable_sparse_execution(model: nn.Module) -> None:
    """Switch every CSR-executing layer of ``model`` back to its plain class (same parameters)."""
    for module in model.modules():
        for base in (nn.Linear, nn.Conv2d):
            if type(module) is _SWITCHABLE[base][0]:
                module.__class__ = base
                del module.csr_plan
                module.__dict__.pop("csr_backend", None)

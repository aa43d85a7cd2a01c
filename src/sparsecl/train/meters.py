"""Small components that measure: training FLOPs, and numerical faults."""

from __future__ import annotations

import math
from typing import Any

import torch

from sparsecl.data.batch import Batch
from sparsecl.sparse.flops import TrainFlopsCounter, inference_flops, profile_layers
from sparsecl.train.hooks import Component, LoopState, StepOutput


class NumericalFault(RuntimeError):
    """A NaN/Inf loss, gradient or weight; the message names the step and the first bad tensor."""


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter (or its gradient) holding a NaN/Inf, or None."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"weight {name}"
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"gradient of {name}"
    return None


@torch.no_grad()
def first_nonfinite_output(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """Name of the first leaf module whose output on ``x`` holds a NaN/Inf (one diagnostic forward)."""
    found: list[str] = []

    def hook(name: str):  # noqa: ANN202
        def check(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not found and torch.is_tensor(output) and not torch.isfinite(output).all():
                found.append(name)
        return check

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found[0] if found else None


def check_loss(loss: torch.Tensor, model: torch.nn.Module, step: int, task: int, x: torch.Tensor) -> None:
    """Raise NumericalFault if ``loss`` is not finite (one host sync per step; cheap on CPU). The message
    names the first non-finite weight or gradient, else the first layer whose output on the batch blew up."""
    if not math.isfinite(float(loss.detach())):
        where = first_nonfinite(model)
        if where is None:
            layer = first_nonfinite_output(model, x)
            where = f"output of layer {layer}" if layer else None
        at = f"; first non-finite tensor: {where}" if where else " (weights and activations finite: the loss itself overflowed)"
        raise NumericalFault(f"loss is {float(loss.detach())} at step {step} (task {task}){at}; "
                             f"the last checkpoint (if any) is intact; lower lr or set grad_clip")


class FlopsMeter(Component):
    """Charges training FLOPs per step, RigL/SparCL convention (spec/SPARCL.md "Training FLOPs").

    Forward and activation-gradient FLOPs at the active densities, weight-gradient FLOPs at the
    gradient densities (DGM) or dense on steps that needed the dense weight gradient (RigL updates,
    SNFS), over every example forwarded with grad (current + replay), and forward-only examples at 1x.
    Densities are re-read only when the masks changed (``engine.mask_version``).
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple[int, ...], engine: Any, grad_density: Any = None) -> None:
        self.profile = profile_layers(model, input_shape)
        self.counter = TrainFlopsCounter(self.profile)
        self.engine = engine
        self.grad_density = grad_density  # an object with grad_densities() -> dict, or None
        self._version = -1
        self._dens: dict[str, float] = {}

    def densities(self) -> dict[str, float]:
        v = getattr(self.engine, "mask_version", None)
        if v is None or v != self._version:
            self._dens = dict(self.engine.densities()["layers"])
            self._version = v if v is not None else -1
        return self._dens

    def after_step(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        dens = self.densities()
        grads = self.grad_density.grad_densities() if self.grad_density is not None else None
        info = self.engine.last_step
        self.counter.add_step(out.n_forward, dens, grad_densities=grads, dense_weight_grad=info.dense_weight_grad)
        if out.n_forward_only:
            self.counter.add_step(out.n_forward_only, dens, backward=False)

    def report(self) -> dict[str, float]:
        dens = self.densities()
        return {
            "train": self.counter.total,
            "train_dense": self.counter.total_dense,
            "inference": inference_flops(self.profile, dens),
            "inference_dense": inference_flops(self.profile, {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.counter.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.counter.load_state_dict(sd)

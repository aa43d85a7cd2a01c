"""Small components that measure: training FLOPs, and numerical faults."""

from __future__ import annotations

import math
from typing import Any

import torch

from sparsecl.data.batch import Batch
from sparsecl.sparse.flops import TrainFlopsCounter, inference_flops, profile_layers
from sparsecl.contract import Component, LoopState, StepOutput


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


def check_loss(loss: torch.Tensor, model: torch.nn.Module, step: int, task: int, x: torch.Tensor) -> float:
    """Raise NumericalFault if ``loss`` is not finite (one host sync per step; cheap on CPU). The message
    names the first non-finite weight or gradient, else the first layer whose output on the batch blew up."""
    value = float(loss.detach())
    if not math.isfinite(value):
        where = first_nonfinite(model)
        if where is None:
            layer = first_nonfinite_output(model, x)
            where = f"output of layer {layer}" if layer else None
        at = f"; first non-finite tensor: {where}" if where else " (weights and activations finite: the loss itself overflowed)"
        raise NumericalFault(f"loss is {value} at step {step} (task {task}){at}; "
                             f"the last checkpoint (if any) is intact; lower lr or set grad_clip")
    return value


class FlopsMeter(Component):
    """Charges training FLOPs per step, RigL/SparCL convention (spec/SPARCL.md "Training FLOPs").

    Forward and activation-gradient FLOPs at the active densities, weight-gradient FLOPs at the
    gradient densities (DGM; at the weight densities on DGM's refresh steps, which score the whole active
    gradient) or dense on steps that needed the dense weight gradient (RigL updates, SNFS, and the
    steps a component asks dense gradients for: ``flags.dense_step``, the run's
    ``SparseExecution.flags``, e.g. TDM's gradient regrowth), over every example forwarded with grad (current + replay), forward-only examples
    at 1x, and the extra backward passes a step reports (``StepOutput.extra_backward``: SparCL's
    gradient split) at 2x. Densities are re-read only when the masks changed (``engine.mask_version``),
    and consecutive steps with the same densities are counted in one call.

    A step is charged in ``after_backward``, when its products are done and nothing has changed the masks
    it ran under yet: a mask update of that step (the engine's, in ``engine.step()``; TDM's, in its
    ``after_step``) counts from the next step on.
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple[int, ...], engine: Any, grad_density: Any = None,
                 flags: Any = None) -> None:
        self.profile = profile_layers(model, input_shape)
        self.counter = TrainFlopsCounter(self.profile)
        self.engine = engine
        self.grad_density = grad_density  # an object with step_grad_densities() -> dict | None, or None
        self.flags = flags  # ExecutionFlags: ``dense_step``, whether this step's components asked for dense weight gradients
        self._key: tuple | None = None
        self._dens: dict[str, float] = {}
        self._grads: dict[str, float] | None = None
        self._dense_grad = False
        self._pending = self._pending_fwd = self._pending_bwd = 0  # examples charged at the current key

    def after_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        # Steps with the same densities and gradient mode are charged together (the count is linear in
        # the number of examples), so the per-step cost is building a small key.
        dense_grad = self.engine.needs_dense_grad() or (self.flags is not None and self.flags.dense_step)
        grads = None
        if self.grad_density is not None and not dense_grad:
            grads = self.grad_density.step_grad_densities()
        key = (getattr(self.engine, "mask_version", None), dense_grad, None if grads is None else tuple(grads.items()))
        if key != self._key:
            self._flush()
            self._key, self._grads, self._dense_grad = key, grads, dense_grad
            self._dens = dict(self.engine.densities()["layers"])
        self._pending += out.n_forward
        self._pending_fwd += out.n_forward_only
        self._pending_bwd += out.extra_backward * out.n_forward

    def _flush(self) -> None:
        if self._pending:
            self.counter.add_step(self._pending, self._dens, grad_densities=self._grads,
                                  dense_weight_grad=self._dense_grad)
        if self._pending_fwd:
            self.counter.add_step(self._pending_fwd, self._dens, backward=False)
        if self._pending_bwd:
            self.counter.add_backward(self._pending_bwd, self._dens)
        self._pending = self._pending_fwd = self._pending_bwd = 0

    def report(self) -> dict[str, float]:
        self._flush()
        dens = dict(self.engine.densities()["layers"])
        return {
            "train": self.counter.total,
            "train_dense": self.counter.total_dense,
            "inference": inference_flops(self.profile, dens),
            "inference_dense": inference_flops(self.profile, {}),
        }

    def state_dict(self) -> dict[str, Any]:
        # the pending group travels as it is: flushing here would make the float sums depend on when
        # checkpoints were taken, and a resumed run must count exactly like an uninterrupted one
        return {"counter": self.counter.state_dict(), "key": self._key, "dens": self._dens, "grads": self._grads,
                "dense_grad": self._dense_grad, "pending": self._pending, "pending_fwd": self._pending_fwd,
                "pending_bwd": self._pending_bwd}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.counter.load_state_dict(sd["counter"])
        self._key, self._dens, self._grads = sd["key"], sd["dens"], sd["grads"]
        self._dense_grad, self._pending, self._pending_fwd = sd["dense_grad"], sd["pending"], sd["pending_fwd"]
        self._pending_bwd = sd.get("pending_bwd", 0)  # checkpoints before extra backward passes were charged

"""Theoretical FLOPs of sparse networks, counted as in RigL (Evci et al., 2020, "Rigging the Lottery",
appendix H); SparCL (Wang et al., 2022) counts the same way.

Convention (the RigL appendix's): only the weight layers (Linear, Conv1d/2d/3d, grouped and depthwise
included) are counted, at 2 FLOPs per multiply-add over their ACTIVE weights; activations are dense.
Biases, BatchNorm/LayerNorm, activations, pooling and residual additions are not counted. One training
step on one example costs

    forward f_S  +  gradient to activations f_S  +  gradient to weights f_S(grad density)

i.e. 3 f_S for a fixed sparse net and 3 f_D dense. The gradient w.r.t. the network input is never needed,
but the convention still counts the first layer's activation gradient (3 f per step, not 3 f - f_first);
we follow it so that numbers compare with the papers.

Deviation from the RigL code: its colab (rigl/imagenet_resnet/colabs/Resnet_50_Param_Flops_Counting)
uses the MicroNet counter: per output element of every conv/fc, n mults + (n - 1) adds for a dot product
of n active weights, plus a bias add and a ReLU op, i.e. 2n + 1 (the +1 is dense, so a sparse net's ratio
to dense comes out slightly higher); and it evaluates Keras' padded 7x7 stem at 115x115 outputs. We
count the weight multiply-adds exactly, as ``torch.utils.flop_counter`` does, so that the profile can be
cross-checked against it (``flop_counter_forward``).

With this count, RigL's ResNet-50 table (tests/test_flops.py) comes out as: dense 8.18 GFLOPs; uniform
80 % / 90 % (stem dense) 0.223x / 0.126x; ERK 80 % / 90 % (all layers in the ERK solve) 0.414x / 0.242x;
SNFS ERK 80 % train 0.609x; RigL_5x uniform 80 % 1.128x (published 1.14x: the MicroNet extras above
give 1.1396); GMP 80 % 0.569x (published 0.56x; the closed forms the tests check the counter against are
in tests/flops_reference.py).

This module stands alone: densities are plain ``{"<module>.weight": density}`` mappings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PHASES = ("forward", "grad_input", "grad_weight")


@dataclass(frozen=True)
class LayerCost:
    """Dense cost of one weight layer for ONE example.

    ``module`` is the qualified module name ("" for a bare layer), ``param`` its weight's name
    ("<module>.weight"), ``macs`` the dense multiply-adds per example (summed over every call of the
    module in one forward) and ``weight_numel`` the number of weight entries.
    """

    module: str
    param: str
    macs: int
    weight_numel: int

    @property
    def dense_flops(self) -> int:
        return 2 * self.macs


# ----------------------------------------------------------------------------------------------------
# profiling


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm accepts a batch of 1) and no autograd; restores every module's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _zero_batch(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) <= 0:
        raise ValueError(f"input_shape must be one example's shape, e.g. (3, 32, 32); got {input_shape}")
    ref = next(model.parameters(), None)
    if ref is None or not ref.is_floating_point():
        return torch.zeros((1, *shape))
    return torch.zeros((1, *shape), device=ref.device, dtype=ref.dtype)


def profile_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerCost]:
    """Dense multiply-adds per example of every Linear/Conv layer, from one forward of a zero batch of 1.

    ``input_shape`` is one example's shape without the batch dimension. Layers come in the order of
    their first call; a module called k times counts k times; a module never called is not listed.
    The model runs in eval mode under ``no_grad`` and every module's mode is restored afterwards. A model
    on the ``meta`` device works (shapes only, no memory). Biases, norms and activations are not counted
    (RigL convention, see the module docstring).
    """
    names = {module: name for name, module in model.named_modules()}
    macs: dict[nn.Module, int] = {}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        # weight is (c_out, c_in/groups, *kernel) or (out, in): every output element is one dot product of
        # length weight.numel() / c_out, i.e. k_h*k_w*c_in/groups for a conv and c_in for a linear. With a
        # batch of 1, output.numel() = c_out*H_out*W_out (conv) or out*(extra leading dims) (linear).
        length = module.weight.numel() // module.weight.shape[0]
        macs[module] = macs.get(module, 0) + output.numel() * length

    handles = [m.register_forward_hook(hook) for m in names if isinstance(m, _COUNTED)]
    try:
        with _eval_no_grad(model):
            model(_zero_batch(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return [
        LayerCost(names[m], f"{names[m]}.weight" if names[m] else "weight", n, m.weight.numel())
        for m, n in macs.items()
    ]


def flop_counter_forward(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of a batch of 1 as counted by ``torch.utils.flop_counter.FlopCounterMode``.

    An independent cross-check of ``dense_forward_flops(profile_layers(...))``: the flop counter also
    counts 2 FLOPs per multiply-add of mm/addmm/bmm/convolution and ignores bias additions (its addmm
    formula is the mm formula), so on models whose only matmuls are Linear/Conv layers the two agree
    exactly. It additionally counts matmuls outside those modules (attention's bmm, F.linear calls).
    """
    counter = FlopCounterMode(display=False)
    with _eval_no_grad(model), counter:
        model(_zero_batch(model, input_shape))
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------
# inference FLOPs


def _aligned(
    profile: Sequence[LayerCost], values: Mapping[str, float], fallback: Sequence[float], what: str
) -> list[float]:
    """Per-layer values in profile order; layers not in ``values`` take ``fallback``; names are checked."""
    params = [c.param for c in profile]
    unknown = set(values) - set(params)
    if unknown:
        raise ValueError(f"{what} for {sorted(unknown)} names no profiled layer; profiled: {params}")
    out = []
    for param, default in zip(params, fallback):
        v = float(values.get(param, default))
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{what} of {param!r} must lie in [0, 1], got {v}")
        out.append(v)
    return out


def dense_forward_flops(profile: Sequence[LayerCost]) -> float:
    """f_D: dense forward FLOPs per example, 2 * sum of multiply-adds."""
    return float(sum(2 * c.macs for c in profile))


def inference_flops(profile: Sequence[LayerCost], densities: Mapping[str, float]) -> float:
    """f_S: forward FLOPs per example, sum_l 2 * MACs_l * density_l (density 1 for unlisted layers)."""
    dens = _aligned(profile, densities, [1.0] * len(profile), "density")
    return sum(2.0 * c.macs * d for c, d in zip(profile, dens))


# ----------------------------------------------------------------------------------------------------
# training FLOPs, accumulated step by step


def _check_count(n_examples: int) -> int:
    if isinstance(n_examples, bool) or int(n_examples) != n_examples or n_examples < 0:
        raise ValueError(f"n_examples must be a non-negative integer, got {n_examples!r}")
    return int(n_examples)


class TrainFlopsCounter:
    """Training FLOPs summed over the examples actually processed (replay draws and DDR's shrinking
    set included, since the caller passes the real batch size of every forward).

    Per example and layer l with dense FLOPs F_l = 2 MACs_l, weight density d_l, gradient density g_l:
    forward F_l d_l, gradient to activations F_l d_l, gradient to weights F_l g_l (g_l = 1 on steps that
    need the dense gradient: RigL's update steps, SNFS every step). ``total_dense`` accumulates the same
    steps for the dense network (3 F_l per example, or F_l for forward-only passes), so
    ``ratio() = total / total_dense`` is the "train FLOPs, x of dense" column of RigL/SparCL tables.
    Evaluation forwards (``add_eval``) are kept apart in ``eval_total``.
    """

    def __init__(self, profile: Sequence[LayerCost]) -> None:
        params = [c.param for c in profile]
        if not params:
            raise ValueError("empty profile: the model has no Linear/Conv layer reached by its forward")
        if len(set(params)) != len(params):
            raise ValueError(f"profile lists a layer twice: {params}")
        self.profile = tuple(profile)
        self._dense = [2.0 * c.macs for c in self.profile]
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.total_dense = 0.0
        self.eval_total = 0.0
        self.steps = 0
        self.examples = 0
        self.eval_examples = 0
        self._layers = {c.param: dict.fromkeys(_PHASES, 0.0) for c in self.profile}

    def add_step(
        self,
        n_examples: int,
        densities: Mapping[str, float],
        *,
        grad_densities: Mapping[str, float] | None = None,
        dense_weight_grad: bool = False,
        backward: bool = True,
    ) -> float:
        """Count one step over ``n_examples``; returns the FLOPs it added.

        ``grad_densities`` (DGM) gives the fraction of each layer's entries whose weight gradient is
        computed; layers it omits use their weight density. ``backward=False`` counts a forward only
        (e.g. buffer logits computed without grad).
        """
        n = _check_count(n_examples)
        if dense_weight_grad and grad_densities is not None:
            raise ValueError("give grad_densities or dense_weight_grad=True, not both")
        if not backward and (dense_weight_grad or grad_densities is not None):
            raise ValueError("a forward-only step (backward=False) has no weight gradient to count")
        dens = _aligned(self.profile, densities, [1.0] * len(self.profile), "density")
        if not backward:
            grads = None
        elif dense_weight_grad:
            grads = [1.0] * len(dens)
        elif grad_densities is None:
            grads = dens
        else:
            grads = _aligned(self.profile, grad_densities, dens, "gradient density")
        added = 0.0
        for i, cost in enumerate(self.profile):
            flops = n * self._dense[i]  # F_l over the n examples
            layer = self._layers[cost.param]
            layer["forward"] += flops * dens[i]
            added += flops * dens[i]
            if grads is not None:
                layer["grad_input"] += flops * dens[i]
                layer["grad_weight"] += flops * grads[i]
                added += flops * (dens[i] + grads[i])
        self.total += added
        self.total_dense += n * sum(self._dense) * (3 if backward else 1)
        self.steps += 1
        self.examples += n
        return added

    def add_backward(self, n_examples: int, densities: Mapping[str, float]) -> float:
        """Count an extra backward pass over ``n_examples`` of an already counted forward (gradients to the
        activations and to the active weights, as in ``add_step``); returns the FLOPs it added."""
        n = _check_count(n_examples)
        dens = _aligned(self.profile, densities, [1.0] * len(self.profile), "density")
        added = 0.0
        for i, cost in enumerate(self.profile):
            flops = n * self._dense[i] * dens[i]
            layer = self._layers[cost.param]
            layer["grad_input"] += flops
            layer["grad_weight"] += flops
            added += 2 * flops
        self.total += added
        self.total_dense += n * sum(self._dense) * 2
        return added

    def add_eval(self, n_examples: int, densities: Mapping[str, float]) -> float:
        """Count an evaluation forward over ``n_examples`` (kept in ``eval_total``); returns its FLOPs."""
        n = _check_count(n_examples)
        flops = n * inference_flops(self.profile, densities)
        self.eval_total += flops
        self.eval_examples += n
        return flops

    def ratio(self) -> float:
        """Training FLOPs relative to the same steps on the dense network."""
        if self.total_dense == 0.0:
            raise ValueError("no training step counted yet: the ratio to dense is undefined")
        return self.total / self.total_dense

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Per layer: FLOPs of the forward, the gradient to activations and the gradient to weights."""
        return {param: dict(phases) for param, phases in self._layers.items()}

    def state_dict(self) -> dict:
        return {
            "total": self.total,
            "total_dense": self.total_dense,
            "eval_total": self.eval_total,
            "steps": self.steps,
            "examples": self.examples,
            "eval_examples": self.eval_examples,
            "layers": self.breakdown(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        layers = state["layers"]
        if set(layers) != set(self._layers):
            raise ValueError(
                f"checkpoint counts layers {sorted(layers)}, this profile has {sorted(self._layers)}"
            )
        self.total = float(state["total"])
        self.total_dense = float(state["total_dense"])
        self.eval_total = float(state["eval_total"])
        self.steps = int(state["steps"])
        self.examples = int(state["examples"])
        self.eval_examples = int(state["eval_examples"])
        self._layers = {p: {k: float(layers[p][k]) for k in _PHASES} for p in self._layers}


__all__ = [
    "LayerCost",
    "TrainFlopsCounter",
    "dense_forward_flops",
    "flop_counter_forward",
    "inference_flops",
    "profile_layers",
]

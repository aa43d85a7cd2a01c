"""Which parameters are sparse.

Candidates are the weights of ``nn.Linear`` and ``nn.Conv1d/2d/3d`` modules, in ``named_modules()``
(registration) order; biases, BatchNorm/LayerNorm parameters and everything else stay dense. A layer
filter picks the sparse layers among the candidates:

* ``all``: every candidate;
* ``sparcl``: the layers SparCL's release sparsifies. Models that list them expose
  ``residual_conv_names()`` (ResNet/WRN: the 3x3 convs inside residual blocks) and/or
  ``hidden_linear_names()`` (MLP: every Linear but the classifier); otherwise every candidate except the
  last Linear (the classifier);
* anything else is a comma-separated list of module names (``features.0,classifier``).

``dense_first`` / ``dense_last`` keep the first / last CANDIDATE (the network's input and output layer)
at density 1. They stay in the engine's layer list, so the ERK budget counts them as RigL's code does;
if the filter already left such a layer out, the option changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sparsecl.registry import Registry

_SPARSE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# A layer filter maps (model, candidate module names in order) to the chosen module names.
LayerFilter = Callable[[nn.Module, list[str]], list[str]]
LAYER_FILTERS: Registry[LayerFilter] = Registry("layer filter")


@dataclass(frozen=True)
class LayerSpec:
    """One sparse layer: its weight's parameter name, its module's name, the weight shape, and whether a
    user option forces it dense."""

    name: str
    module_name: str
    shape: torch.Size
    forced_dense: bool = False

    @property
    def numel(self) -> int:
        return self.shape.numel()


def candidates(model: nn.Module) -> dict[str, str]:
    """Module name -> weight parameter name of every Linear/Conv in module order (shared weights once)."""
    param_names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, str] = {}
    for module_name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(module, _SPARSE_TYPES) and isinstance(w, nn.Parameter) and id(w) in param_names:
            name = param_names.pop(id(w))  # pop: a weight tied to a second module is listed only once
            out[module_name] = name
    return out


@LAYER_FILTERS.register("all")
def all_layers(model: nn.Module, names: list[str]) -> list[str]:
    return list(names)


@LAYER_FILTERS.register("sparcl")
def sparcl_layers(model: nn.Module, names: list[str]) -> list[str]:
    listed: list[str] = []
    for hook in ("residual_conv_names", "hidden_linear_names"):
        if callable(getattr(model, hook, None)):
            listed += list(getattr(model, hook)())
    if listed:
        return _check_names(listed, names)
    linears = [n for n in names if isinstance(model.get_submodule(n), nn.Linear)]
    return [n for n in names if not linears or n != linears[-1]]


def _check_names(chosen: list[str], names: list[str]) -> list[str]:
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"layers: {', '.join(unknown)} are not Linear/Conv modules of the model; "
                         f"valid: {', '.join(names)}")
    wanted = set(chosen)
    return [n for n in names if n in wanted]  # module order


def select_layers(model: nn.Module, layers: str = "all", dense_first: bool = False,
                  dense_last: bool = False) -> list[LayerSpec]:
    """The sparse layers of ``model`` in module order (see the module docstring for the options)."""
    cand = candidates(model)
    names = list(cand)
    if layers in LAYER_FILTERS:
        chosen = LAYER_FILTERS.get(layers)(model, names)
    else:
        chosen = _check_names([s.strip() for s in layers.split(",") if s.strip()], names)
    forced = {names[0]} if dense_first and names else set()
    if dense_last and names:
        forced.add(names[-1])
    params = dict(model.named_parameters())
    return [LayerSpec(cand[m], m, params[cand[m]].shape, m in forced) for m in chosen]

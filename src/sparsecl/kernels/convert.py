"""Swap masked nn.Linear / nn.Conv2d layers for their CSR modules (and back) in place.

The mask engine exposes ``engine.masks``: parameter name -> bool mask (``"hidden.0.weight"`` -> [out, in]).
``sparsify_model`` replaces each such layer for which the chosen path is "csr" by a SparseLinear or
SparseConv2d holding the weight at the mask's True entries; layers on the "masked" path, and masks of
anything else (biases, norms), are left to the mask engine. ``densify_model`` is the inverse: every CSR
module becomes a dense layer whose weight is zero off the mask. The round trip is exact.

Note for callers: a CSR module's trainable weight is named ``<module>.values`` (shape [nnz]), not
``<module>.weight``; build the optimizer after sparsifying (or rebuild it) so it holds the new parameters,
and keep masks of CSR modules out of the mask engine's re-masking (they cannot drift: inactive weights do
not exist). A mask update on a CSR module is ``set_mask`` + ``remap_optimizer_state``.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecl.kernels.base import CsrWeightModule
from sparsecl.kernels.paths import PATHS, choose_conv_path, choose_path


def _split(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def _replace(model: nn.Module, module_name: str, new: nn.Module) -> None:
    parent, child = _split(module_name)
    setattr(model.get_submodule(parent) if parent else model, child, new)


def sparsify_model(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    path: str = "auto",
    batch: int = 128,
    threads: int | None = None,
    backend: str = "auto",
) -> dict[str, str]:
    """Replace, in place, every nn.Linear / nn.Conv2d whose ``<module>.weight`` has a mask and whose path
    is "csr".

    Returns ``{module name: chosen path}`` for every masked layer weight considered ("csr" or "masked").
    ``path`` is "auto" (per layer: :func:`choose_path` from shape, ``batch``, the mask's density and
    ``threads`` for linear layers, :func:`choose_conv_path` for convolutions), or "csr"/"masked" to force
    one path (convolutions the direct kernel does not cover stay "masked"). ``backend`` is passed to every
    new CSR module.
    """
    modules = dict(model.named_modules())
    chosen: dict[str, str] = {}
    for pname, mask in masks.items():
        module_name, leaf = _split(pname)
        layer = modules.get(module_name)
        if leaf != "weight" or not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        density = float(mask.sum()) / mask.numel()
        if isinstance(layer, nn.Linear):
            choice = choose_path(layer.out_features, layer.in_features, batch, density, threads, path, backend,
                                 layer.weight.device.type)
        else:
            choice = choose_conv_path(layer, density, path, backend)
        chosen[module_name] = choice
        new = PATHS.get(choice)(layer, mask.bool(), backend)
        if new is not layer:
            _replace(model, module_name, new)
    return chosen


def sparsify_by_zeros(model: nn.Module, batch: int, path: str = "auto", threads: int | None = None) -> dict[str, str]:
    """:func:`sparsify_model` with each nn.Linear / nn.Conv2d weight's nonzeros as its mask: inference of a
    trained or exported sparse model (its inactive weights are exact zeros) on the CSR kernels where they
    pay. A dense layer stays dense under "auto" (its density is above every CSR cap)."""
    masks = {f"{name}.weight": m.weight.detach() != 0 for name, m in model.named_modules()
             if type(m) in (nn.Linear, nn.Conv2d)}
    return sparsify_model(model, masks, path, batch, threads)


def densify_model(model: nn.Module) -> dict[str, torch.Tensor]:
    """Replace every CSR module by its dense layer; returns ``{"<module>.weight": dense weight}``.

    The returned tensors are the new layers' weight Parameters (zeros off the mask); use
    :func:`sparse_masks` before densifying to keep the exact active sets (active weights may be 0).
    """
    weights: dict[str, torch.Tensor] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, CsrWeightModule):
            dense = module.to_dense_module()
            _replace(model, name, dense)
            weights[f"{name}.weight"] = dense.weight
    return weights


def sparse_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.weight": bool mask}`` of every CSR module in ``model`` (the engine's key format)."""
    return {f"{n}.weight": m.mask() for n, m in model.named_modules() if isinstance(m, CsrWeightModule)}

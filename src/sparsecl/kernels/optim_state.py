"""Carry per-weight optimizer state across a change of a SparseLinear's active set.

After ``old_to_new = layer.set_mask(mask)`` the optimizer still holds state tensors of the old length
(SGD ``momentum_buffer``, Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``). Each such tensor
t_old [old_nnz] becomes t_new [new_nnz] with

    t_new[old_to_new[k]] = t_old[k]   for every surviving k (old_to_new[k] >= 0),
    t_new[p] = 0                      for every newly grown position p,

which is the rule of RigL (Evci et al., 2020, "Rigging the Lottery"): grown connections start with
zero weight and zero optimizer state. Scalar state (Adam's ``step``) is per-parameter and kept as is.
"""

from __future__ import annotations

import torch


def remap_tensor(t: torch.Tensor, old_to_new: torch.Tensor, new_numel: int) -> torch.Tensor:
    """Scatter a [old_nnz] tensor to its new positions; new positions are zero."""
    keep = old_to_new >= 0
    out = t.new_zeros(new_numel)
    out[old_to_new[keep]] = t[keep]
    return out


def remap_optimizer_state(
    optimizer: torch.optim.Optimizer,
    param: torch.Tensor,
    old_to_new: torch.Tensor,
    new_numel: int,
) -> None:
    """Remap, in place, every per-element state tensor the optimizer keeps for ``param``.

    A state tensor is per-element when it has exactly ``old_to_new.numel()`` elements and one dimension;
    anything else (scalars such as ``step``) is left untouched.
    """
    state = optimizer.state.get(param)
    if not state:
        return
    old_numel = old_to_new.numel()
    for key, value in list(state.items()):
        if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() == old_numel:
            state[key] = remap_tensor(value, old_to_new, new_numel)

"""``Sparsifier``: the mask engine for your own PyTorch loop, in the shape of an optimizer.

    sparsifier = Sparsifier(model, optimizer, method="rigl", density=0.1, total_steps=n)
    ...
    loss.backward()
    sparsifier.step()  # instead of optimizer.step()

It builds a ``SparsityConfig`` from keyword arguments (every field of it, validated there), creates the
initial masks at once (zeroing the inactive weights) and hands ``step``/``state_dict`` to ``MaskEngine``,
whose docstring states what one step does. A checkpoint of your loop holds ``sparsifier.state_dict()``
next to the model's and optimizer's; loading all three resumes bit-identically.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.engine import MaskEngine, StepInfo
from sparsecl.sparse.methods import LossClosure


class Sparsifier:
    """Sparse training around ``optimizer`` (see the module docstring).

    ``method``/``density`` and ``**options`` are ``SparsityConfig`` fields (``delta_t``, ``drop_fraction``,
    ``distribution``, ``dense_first``, ...); ``total_steps`` is the number of ``step()`` calls planned (the
    mask-update schedule is a fraction of it); ``seed`` seeds the engine's own generator;
    ``loss_closure`` (a callable returning a loss on one batch) is needed by methods that score the
    initial mask by a gradient (SNIP).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, total_steps: int,
                 method: str = "rigl", density: float = 0.1, seed: int = 0,
                 loss_closure: LossClosure | None = None, **options: Any) -> None:
        self.config = SparsityConfig(method=method, density=density, **options)
        self.engine = MaskEngine(model, optimizer, self.config, total_steps, torch.Generator().manual_seed(seed))
        self.engine.begin(loss_closure)

    def step(self) -> StepInfo:
        """Replaces ``optimizer.step()``: mask the gradients, step, re-mask, update masks when scheduled."""
        return self.engine.step()

    def mask_grads(self) -> None:
        """Zero the inactive weights' gradients now (call before clipping the gradient norm)."""
        self.engine.mask_grads()

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self.engine.masks

    def density(self) -> float:
        """Active fraction of the sparse layers' weights."""
        return self.engine.densities()["overall"]

    def state_dict(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.engine.load_state_dict(sd)

"""RigL (Evci, Gale, Menick, Castro & Elsen, ICML 2020, "Rigging the Lottery: Making All Tickets
Winners"): SET with growth by the largest |dense gradient|.

As in the reference code (google-research/rigl, ``SparseRigLOptimizer``) the optimizer step is skipped on
update steps; the gradient of that step only serves as the grow score. With ``grad_accumulation`` k the
grow score is |sum of the dense gradients of the k steps ending at the update step| (a common option;
k = 1 is the paper). Dense weight gradients are needed only on those k steps (``needs_dense_grad``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS
from sparsecl.sparse.methods.set import SET

if TYPE_CHECKING:
    from sparsecl.sparse.engine import MaskEngine


@SPARSE_METHODS.register("rigl")
class RigL(SET):
    skip_step_on_update = True

    def __init__(self, engine: "MaskEngine") -> None:
        super().__init__(engine)
        self._acc: list[torch.Tensor | None] | None = None  # summed dense gradients, only inside a window

    def needs_dense_grad(self, t: int) -> bool:
        return any(self.schedule.is_update(u) for u in range(t, t + self.cfg.grad_accumulation))

    def observe_grads(self, t: int) -> None:
        if self._acc is None:
            self._acc = [None] * len(self.engine.layers)
        for i, layer in enumerate(self.engine.layers):
            g = layer.param.grad
            if g is None:
                continue
            if self._acc[i] is None:
                self._acc[i] = g.detach().clone()
            else:
                self._acc[i].add_(g)

    def grow_score(self, i: int, generator: torch.Generator) -> torch.Tensor:
        acc = None if self._acc is None else self._acc[i]
        return acc.abs() if acc is not None else torch.zeros_like(self.engine.layers[i].param)

    def update(self, t: int) -> dict[int, torch.Tensor]:
        new = super().update(t)
        self._acc = None  # free the window's buffers
        return new

    def state_dict(self) -> dict[str, Any]:
        return {"acc": None if self._acc is None else [None if a is None else a.clone() for a in self._acc]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        acc = sd["acc"]
        self._acc = None if acc is None else [
            None if a is None else a.to(layer.param.device) for a, layer in zip(acc, self.engine.layers, strict=True)]

"""SNFS, sparse momentum (Dettmers & Zettlemoyer, 2019, "Sparse Networks from Scratch: Faster Training
without Losing Performance"): SET with growth by the largest |momentum of the dense gradient|.

The optimizer's own momentum only sees masked gradients, so the method keeps its own exponential moving
average of the DENSE weight gradient, every step (hence a dense weight gradient every step):

    m_t = beta * m_{t-1} + g_t

beta is the optimizer's momentum coefficient (SGD ``momentum``, else Adam's ``betas[0]``), or 0.9 when it
has none. Deviation: the paper also redistributes weights across layers by mean momentum magnitude; we
keep every layer's count fixed (the spec's invariant) and use it only for growth, as the RigL paper's SNFS
baseline with a fixed distribution does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sparsecl.sparse.methods.base import SPARSE_METHODS
from sparsecl.sparse.methods.set import SET

if TYPE_CHECKING:
    from sparsecl.sparse.engine import MaskEngine

DEFAULT_BETA = 0.9


def momentum_coefficient(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> float:
    """The momentum coefficient ``optimizer`` applies to ``param`` (DEFAULT_BETA if none)."""
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            if group.get("momentum", 0.0) > 0:
                return float(group["momentum"])
            if "betas" in group:
                return float(group["betas"][0])
    return DEFAULT_BETA


@SPARSE_METHODS.register("snfs")
class SNFS(SET):
    def __init__(self, engine: "MaskEngine") -> None:
        super().__init__(engine)
        self.betas = [momentum_coefficient(engine.optimizer, layer.param) for layer in engine.layers]
        self._momentum: list[torch.Tensor] | None = None

    def needs_dense_grad(self, t: int) -> bool:
        return True

    def observe_grads(self, t: int) -> None:
        if self._momentum is None:
            self._momentum = [torch.zeros_like(layer.param) for layer in self.engine.layers]
        for m, beta, layer in zip(self._momentum, self.betas, self.engine.layers):
            if layer.param.grad is not None:
                m.mul_(beta).add_(layer.param.grad)

    def grow_score(self, i: int, generator: torch.Generator) -> torch.Tensor:
        if self._momentum is None:
            return torch.zeros_like(self.engine.layers[i].param)
        return self._momentum[i].abs()

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": None if self._momentum is None else [m.clone() for m in self._momentum]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        mom = sd["momentum"]
        self._momentum = None if mom is None else [
            m.to(layer.param.device) for m, layer in zip(mom, self.engine.layers, strict=True)]

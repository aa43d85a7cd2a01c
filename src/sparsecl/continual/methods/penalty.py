"""What online EWC and Synaptic Intelligence share: a quadratic penalty that ties every parameter to its
value at the end of the previous task, weighted by a per-parameter importance."""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.continual.base import ContinualMethod, MethodContext
from sparsecl.data.batch import Batch
from sparsecl.contract import StepOutput


class AnchoredPenalty(ContinualMethod):
    """loss = CE(f(x), y) + weight sum_k importance_k (theta_k - theta*_k)^2 once ``importance`` exists.

    Subclasses set ``weight_key`` (the config field of the weight) and fill ``importance`` and ``anchor``
    (theta*) at task ends.
    """

    weight_key: str = ""

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.params = dict(model.named_parameters())
        self.importance: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None  # theta*

    def penalty(self) -> torch.Tensor:
        return sum((self.importance[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items())

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        loss = self.current_loss(logits, batch, self.cfg.masked_head)
        if self.importance is not None:
            loss = loss + getattr(self.cfg, self.weight_key) * self.penalty()
        return StepOutput(loss, logits, len(batch))

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The parameters now (the next anchor)."""
        return {n: p.detach().clone() for n, p in self.params.items()}

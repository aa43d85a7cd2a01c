"""What iCaRL and LwF-MC share: the network frozen at the end of the previous task, and the binary
cross-entropy that distils it (Rebuffi et al., CVPR 2017, Sec. 2.4; mammoth's ``icarl`` / ``lwf_mc``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.base import ContinualMethod, MethodContext
from sparsecl.data.batch import Batch
from sparsecl.kernels.execution import plain_copy
from sparsecl.contract import StepOutput


class DistilsPreviousNetwork(ContinualMethod):
    """loss = BCE with logits over the classes seen so far (the current task's included); targets: the
    one-hot label on the current task's classes, and on earlier classes the sigmoid outputs of the network
    frozen at the end of the previous task, for every example of the batch.

    Subclasses call ``freeze()`` at task end and keep ``previous_state()`` / ``load_previous()`` in their
    state. ``seen`` marks the classes of the finished tasks.
    """

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.old: torch.nn.Module | None = None  # the network as it was at the end of the previous task
        self.seen = torch.zeros(ctx.stream.num_classes, dtype=torch.bool, device=ctx.device)

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        cols = self.seen.clone()
        cols[list(self.ctx.stream.tasks[batch.task].classes)] = True
        target = F.one_hot(batch.y, logits.shape[1]).to(logits.dtype)
        forward_only = 0
        if self.old is not None:
            with torch.no_grad():
                target = torch.where(self.seen, torch.sigmoid(self.old(batch.x)).to(logits.dtype), target)
            forward_only = len(batch)
        loss = F.binary_cross_entropy_with_logits(logits[:, cols], target[:, cols])
        return StepOutput(loss, logits, len(batch), n_forward_only=forward_only)

    def freeze(self, classes: tuple[int, ...]) -> None:
        """End of a task: a dense, frozen copy of the network; ``classes`` join the earlier ones."""
        self.old = plain_copy(self.model).eval().requires_grad_(False)
        self.seen[list(classes)] = True

    def previous_state(self) -> dict[str, Any]:
        return {"seen": self.seen.clone(), "old": None if self.old is None else self.old.state_dict()}

    def load_previous(self, sd: dict[str, Any]) -> None:
        self.seen.copy_(sd["seen"])
        self.old = None
        if sd["old"] is not None:
            self.old = plain_copy(self.model).eval().requires_grad_(False)
            self.old.load_state_dict(sd["old"])

"""A-GEM: Averaged Gradient Episodic Memory (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning
with A-GEM", arXiv 1812.00420)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.base import MethodContext
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.data.batch import Batch
from sparsecl.train.hooks import StepOutput


def agem_project(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """g~ = g - (g.r / r.r) r when g.r < 0, else g (paper eq. 11): afterwards g~.r = 0 >= 0.

    No host sync: the condition selects the coefficient on the device.
    """
    dot = g @ r
    coef = torch.where(dot < 0, dot / (r @ r).clamp_min(torch.finfo(r.dtype).tiny), torch.zeros_like(dot))
    return g - coef * r


def _flat(grads: Any, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])


@CL_METHODS.register("agem")
class AGEM(RehearsalMethod):
    """The reference gradient r is the gradient of the CE on ``agem_batch`` examples drawn from the buffer
    (the paper's P = 256 random memory examples), computed in ``compute_loss`` with the same parameters as
    the current gradient g; ``after_backward`` replaces g by ``agem_project(g, r)``.

    Deviation from the paper and mammoth: the memory is the configured buffer policy (reservoir by
    default, filled online) instead of a per-task episodic memory filled at task end; ``buffer_policy:
    after-task`` gives the latter. Both passes count in ``n_forward``.
    """

    options = ("buffer_size", "buffer_policy", "agem_batch", "masked_head")
    replay_draws = 0  # the reference batch has a forward of its own

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self._ref: torch.Tensor | None = None  # flat reference gradient of the current step

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        loss, n = self.current_loss(logits, batch, self.cfg.masked_head), len(batch)
        self._ref = None
        if not self.buffer.empty:
            rep = self.replay(self.cfg.agem_batch)
            params = self._params()
            ref = torch.autograd.grad(F.cross_entropy(self.model(rep.x), rep.y), params, allow_unused=True)
            self._ref = _flat(ref, params)
            n += rep.y.shape[0]
        return StepOutput(loss, logits, n)

    def after_backward(self, state: Any, batch: Batch, out: StepOutput) -> None:
        if self._ref is None:
            return
        params = self._params()
        g = agem_project(_flat([p.grad for p in params], params), self._ref)
        self._ref = None
        for p, chunk in zip(params, g.split([p.numel() for p in params])):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))

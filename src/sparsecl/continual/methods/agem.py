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
from sparsecl.contract import StepOutput
from sparsecl.distributed import current as current_dist


def agem_project(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """g~ = g - (g.r / r.r) r when g.r < 0, else g (paper eq. 11): afterwards g~.r = 0 >= 0.

    No host sync: the condition selects the coefficient on the device.
    """
    dot = g @ r
    coef = torch.where(dot < 0, dot / (r @ r).clamp_min(torch.finfo(r.dtype).tiny), torch.zeros_like(dot))
    return g - coef * r


def _flat(grads: Any, params: list[torch.Tensor], masks: list[torch.Tensor | None]) -> torch.Tensor:
    """One vector of the gradients, each zeroed where its weight's mask is off (None: no mask)."""
    parts = []
    for g, p, m in zip(grads, params, masks):
        g = torch.zeros_like(p) if g is None else g
        parts.append((g if m is None else g * m).flatten())
    return torch.cat(parts)


@CL_METHODS.register("agem")
class AGEM(RehearsalMethod):
    """The reference gradient r is the gradient of the CE on ``agem_batch`` examples drawn from the
    buffer's examples of EARLIER tasks (the paper's episodic memory of the past tasks, P = 256 random
    examples; none on the first task, which trains as plain SGD), computed in ``compute_loss`` with the
    same parameters as the current gradient g; ``after_backward`` replaces g by ``agem_project(g, r)``.

    Under a sparse mask, g and r are both taken with the gradients of inactive weights zeroed (what the
    optimizer can apply), so the applied update keeps g~.r >= 0 (projecting the dense g and masking
    afterwards would not).

    Deviation from the paper and mammoth: the memory is the configured buffer (reservoir by default,
    filled online over the whole stream, so the past tasks' share is a uniform sample of what was seen)
    instead of a per-task episodic memory filled at task end; ``buffer_policy: after-task`` gives the
    latter. Both passes count in ``n_forward``.
    """

    options = ("buffer_size", "buffer_policy", "agem_batch", "masked_head")
    replay_draws = 0  # the reference batch has a forward of its own

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self._ref: torch.Tensor | None = None  # flat reference gradient of the current step
        self._weight_masks: dict[str, torch.Tensor] = {}  # this step's weight masks (``state.weight_masks``)

    def before_forward(self, state: Any, batch: Batch) -> None:
        self._weight_masks = state.weight_masks()  # masks change only in the step, after the backward

    def _params(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Trainable parameters and their weight masks (None: dense), in model order."""
        masks = self._weight_masks
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return [p for _, p in named], [masks.get(n) for n, _ in named]

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.x)
        loss, n = self.current_loss(logits, batch, self.cfg.masked_head), len(batch)
        self._ref = None
        past = self.buffer.slots_before(batch.task)
        if past.numel():
            rep = self.replay(self.cfg.agem_batch, among=past)
            params, masks = self._params()
            ref = torch.autograd.grad(F.cross_entropy(self.model(rep.x), rep.y), params, allow_unused=True)
            self._ref = current_dist().reduce_grads([_flat(ref, params, masks)])[0]  # N processes: the group's r
            n += rep.y.shape[0]
        return StepOutput(loss, logits, n)

    def after_backward(self, state: Any, batch: Batch, out: StepOutput) -> None:
        if self._ref is None:
            return
        params, masks = self._params()
        g = agem_project(_flat([p.grad for p in params], params, masks), self._ref)
        self._ref = None
        for p, chunk in zip(params, g.split([p.numel() for p in params])):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))

"""Online EWC (Schwarz et al., ICML 2018, "Progress & Compress", arXiv 1805.06370; EWC: Kirkpatrick et
al., PNAS 2017), in mammoth's form (``ewc_on``).

loss = CE(f(x), y) + lambda sum_i F_i (theta_i - theta*_i)^2, with theta* the parameters at the end of the
previous task and F the online Fisher diagonal: at every task end F <- gamma F + F_t, where

    F_t = (1 / N) sum_n p(y_n | x_n) (d log p(y_n | x_n) / d theta)^2

over the task's N training examples with their own labels, weighted by the model's probability of that
label (mammoth's ``exp_cond_prob``), from a dense copy of the network in eval mode, without N backward
passes: Linear layers by their outer-product form, other layers by ``torch.func`` (``fisher_diagonal``).

Deviations from mammoth: F_t is computed on the non-augmented view in eval mode (mammoth: the training
loader's augmented view, BatchNorm in train mode on single examples) and divided by N exactly (mammoth:
by the number of batches times the batch size). No buffer: the method works on every scenario.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.penalty import AnchoredPenalty
from sparsecl.data.stream import Task
from sparsecl.kernels.execution import plain_copy


def fisher_diagonal(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """sum_n p(y_n | x_n) (grad log p(y_n | x_n))^2 per parameter of ``model`` (not divided by N), for
    normalised inputs ``x`` and labels ``y``; ``model`` is evaluated as it is (put it in eval mode, so that
    no layer mixes the examples of a chunk).

    A Linear layer fed [B, in] gets its per-example gradients as outer products: with a_n its input and
    g_n the gradient of log p_n at its output, (grad_W log p_n)^2 = g_n^2 (a_n^2)^T, so the weighted sum over
    examples is one matrix product, (w * G^2)^T A^2, and no per-example gradient is ever stored. Every
    other parameter (convolutions, normalisation) goes through ``torch.func.vmap`` of ``grad``.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    linears = {n: m for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    by_rule = {f"{n}.{k}" for n, m in linears.items() for k in ("weight", "bias") if getattr(m, k) is not None}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # linear -> (input, output) of this chunk
    folded: set[str] = set()  # linears called on [B, in] (else: a gradient summed over positions, vmap)
    hooks = [m.register_forward_hook(lambda m, i, o, name=n: seen.__setitem__(name, (i[0], o)))
             for n, m in linears.items()]
    try:
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            seen.clear()
            lp = F.log_softmax(model(xs), 1).gather(1, ys[:, None]).squeeze(1)
            w = lp.detach().exp()
            flat = {n: io for n, io in seen.items() if io[0].dim() == 2}  # [B, in]: one row per example
            outs = torch.autograd.grad(lp.sum(), [o for _, o in flat.values()], allow_unused=True)
            for (name, (a, _)), g in zip(flat.items(), outs):
                if g is None:  # a layer whose output does not reach the logits: zero gradient
                    continue
                wg2 = w[:, None] * g.pow(2)
                total[f"{name}.weight"] += wg2.T @ a.detach().pow(2)
                if linears[name].bias is not None:
                    total[f"{name}.bias"] += wg2.sum(0)
            folded = set(flat)
    finally:
        for h in hooks:
            h.remove()
    rest = [n for n in params if n not in by_rule or n.rpartition(".")[0] not in folded]
    if rest:
        _vmap_fisher(model, params, rest, x, y, chunk, total)
    return total


def _vmap_fisher(model: torch.nn.Module, params: dict[str, torch.Tensor], names: list[str], x: torch.Tensor,
                 y: torch.Tensor, chunk: int, total: dict[str, torch.Tensor]) -> None:
    """Add sum_n p_n (grad log p_n)^2 for the parameters ``names``, per-example gradients by ``torch.func``."""
    fixed = {n: p for n, p in params.items() if n not in names}
    buffers = dict(model.named_buffers())

    def log_p(free: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, ({**fixed, **free}, buffers), (xi.unsqueeze(0),))
        return F.log_softmax(out, 1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)  # no data-dependent indexing

    per_example = torch.func.vmap(torch.func.grad_and_value(log_p), in_dims=(None, 0, 0))
    free = {n: params[n] for n in names}
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        grads, lp = per_example(free, xs, ys)
        w = lp.exp()
        for n, g in grads.items():
            total[n] += (w.view(-1, *[1] * (g.dim() - 1)) * g.pow(2)).sum(0)


@CL_METHODS.register("ewc_on")
class OnlineEWC(AnchoredPenalty):
    """See the module docstring; ``importance`` is the online Fisher diagonal."""

    options: tuple[str, ...] = ("masked_head", "ewc_lambda", "ewc_gamma")
    weight_key = "ewc_lambda"

    @torch.no_grad()
    def on_task_end(self, state: Any, task: Task) -> None:
        idx = self.finished_examples(state, task)
        if idx.numel() == 0:
            return
        ds = self.ctx.stream.dataset
        x = self.ctx.transform.test(task.inputs(ds.x_train.index_select(0, idx)))
        with torch.enable_grad():
            new = fisher_diagonal(plain_copy(self.model).eval(), x, ds.y_train.index_select(0, idx))
        new = {n: f / idx.numel() for n, f in new.items()}
        if self.importance is None:
            self.importance = new
        else:
            self.importance = {n: self.cfg.ewc_gamma * f + new[n] for n, f in self.importance.items()}
        self.anchor = self.snapshot()

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.importance, "anchor": self.anchor}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.importance, self.anchor = sd["fisher"], sd["anchor"]

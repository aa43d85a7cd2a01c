"""The current-task and buffer gradients of one step, separately, at the cost of one extra backward.

SparCL's importance scores (spec/SPARCL.md) weight the gradient of the current-task loss L~(D_t) and of
the buffer loss L(M) differently. The loop back-propagates their sum; on the few steps where a score is
needed we first take ``g_cur = d parts["current"] / dw`` with ``retain_graph=True``; after the loop's
backward ``g_buf = g_total - g_cur``. Methods without a buffer have ``g_buf = 0``.
"""

from __future__ import annotations

import weakref

import torch

from sparsecl.contract import StepOutput
from sparsecl.distributed import current as current_dist


def current_grads(out: StepOutput, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d(current-data loss)/d(params); call before the loop's backward (keeps the graph alive). The
    backward is counted on ``out.extra_backward`` (training FLOPs)."""
    current = out.parts["current"] if out.parts and "current" in out.parts else out.loss
    grads = torch.autograd.grad(current, params, retain_graph=True, allow_unused=True)
    out.extra_backward += 1
    # N processes: the group's current-data gradient, as the loop's backward is reduced (sparsecl.distributed)
    return current_dist().reduce_grads([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])


def has_buffer_part(out: StepOutput) -> bool:
    return bool(out.parts) and "current" in out.parts and len(out.parts) > 1


class GradientSplit:
    """The current-task gradient of a step, taken once for every SparCL part that asks for it.

    TDM (weight importance) and DGM (gradient importance) may both need ``d parts["current"] / dw`` on the
    same step; each asks ``split.current(out, names)`` in its ``before_backward`` and the first request of a
    step (one ``StepOutput``) runs the one extra backward, over every weight any part registered, so both
    read the same gradients and the step is charged one extra backward. ``params``: name -> weight of
    every part that uses the split.
    """

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.params = dict(params)
        self._out: weakref.ref | None = None  # the step the gradients belong to (weak: never keeps its graph)
        self._grads: dict[str, torch.Tensor] = {}

    def register(self, params: dict[str, torch.Tensor]) -> None:
        """Add the weights of one more part (before the first request)."""
        self.params.update(params)

    def current(self, out: StepOutput, names: list[str]) -> list[torch.Tensor]:
        """d(current-data loss)/dw of ``names`` for the step of ``out`` (call before the loop's backward)."""
        if self._out is None or self._out() is not out:
            self._grads = dict(zip(self.params, current_grads(out, list(self.params.values()))))
            self._out = weakref.ref(out)
        return [self._grads[n] for n in names]

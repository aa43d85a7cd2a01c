"""The current-task and buffer gradients of one step, separately, at the cost of one extra backward.

SparCL's importance scores (spec/SPARCL.md) weight the gradient of the current-task loss L~(D_t) and of
the buffer loss L(M) differently. The loop back-propagates their sum; on the few steps where a score is
needed we first take ``g_cur = d parts["current"] / dw`` with ``retain_graph=True``; after the loop's
backward ``g_buf = g_total - g_cur``. Methods without a buffer have ``g_buf = 0``.
"""

from __future__ import annotations

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

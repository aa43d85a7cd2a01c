"""The small base class of continual-learning methods (mammoth style: one short file per method)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsecl.data.batch import Batch
from sparsecl.data.stream import Stream, Task
from sparsecl.data.transforms import BatchTransform
from sparsecl.train.hooks import Component, StepOutput


@dataclass
class MethodContext:
    """What a method may use besides the model: built by the loop, owned by nobody else."""

    stream: Stream
    transform: BatchTransform  # re-applied to buffered (non-augmented) inputs on replay
    generator: torch.Generator  # the method's own RNG (replay draws, reservoir decisions)
    device: torch.device


class ContinualMethod(Component):
    """A continual-learning method: computes each step's loss; may keep a buffer; hooks the named moments.

    Subclasses override ``compute_loss`` (required) and, when needed, ``after_step`` (buffer updates),
    ``after_backward`` (gradient projection, e.g. A-GEM), ``on_task_start``/``on_task_end`` and
    ``train_indices`` (which examples a task trains on; Joint changes it).
    """

    def __init__(self, model: torch.nn.Module, cfg: "object", ctx: MethodContext) -> None:
        self.model = model
        self.cfg = cfg
        self.ctx = ctx
        self.current_task: Task | None = None

    def on_task_start(self, state, task: Task) -> None:  # noqa: ANN001 - LoopState, avoid import cycle noise
        self.current_task = task

    def train_indices(self, task: Task) -> torch.Tensor | None:
        """The training examples of ``task`` (None: do not train on this task)."""
        return task.train_idx

    def compute_loss(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def forward_batch(self, batch_size: int) -> int:
        """Examples one model forward carries in a training step (a hint for the layers' execution path)."""
        return batch_size

    # -- shared helpers ---------------------------------------------------------------------------
    def current_loss(self, logits: torch.Tensor, batch: Batch, masked_head: bool) -> torch.Tensor:
        """Cross-entropy on current data; with ``masked_head`` the logits of classes outside the current
        task are set to -inf first (SparCL's ``--use_cl_mask``; spec/SPARCL.md)."""
        if masked_head:
            logits = mask_to_classes(logits, self.ctx.stream.tasks[batch.task].classes)
        return F.cross_entropy(logits, batch.y)


def mask_to_classes(logits: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Logits with every column outside ``classes`` set to -inf (a copy; the input is untouched)."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[list(classes)] = True
    return logits.masked_fill(~keep, float("-inf"))

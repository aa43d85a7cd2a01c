"""The small base class of continual-learning methods (mammoth style: one short file per method)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sparsecl.data.batch import Batch
from sparsecl.data.loader import make_batch
from sparsecl.data.stream import Stream, Task
from sparsecl.data.transforms import BatchTransform
from sparsecl.contract import Component, StepOutput


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

    needs_new_classes = False  # tasks must bring classes of their own (``create_method`` checks the stream)

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

    def make_batch(self, task: Task, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        """The training batch of examples ``idx`` (from ``train_indices``) of ``task``."""
        return make_batch(self.ctx.stream, task, idx, self.ctx.transform, generator)

    def forward_batch(self, batch_size: int) -> int:
        """Examples one model forward carries in a training step (a hint for the layers' execution path)."""
        return batch_size

    def train_size(self, task: Task) -> int:
        """How many examples ``task`` will train on, known before the run starts (the step plan); methods
        whose training set grows during the run (iCaRL's exemplars) override it."""
        idx = self.train_indices(task)
        return 0 if idx is None else int(idx.numel())

    def index_space(self) -> int:
        """One more than the largest example index ``train_indices`` can return (Dynamic Data Removal keys
        its per-example state on them): the training split's size unless a method numbers more."""
        return int(self.ctx.stream.dataset.x_train.shape[0])

    def finished_examples(self, state: object, task: Task) -> torch.Tensor:
        """Training-split indices of ``task``'s examples still active at its end: the loop's
        ``state.active_idx`` (what Dynamic Data Removal left; a method's own extra indices, >= the split's
        size, dropped), else the task's split."""
        active = getattr(state, "active_idx", None)
        if active is None:
            return task.train_idx
        return active[active < self.ctx.stream.dataset.x_train.shape[0]]

    @torch.no_grad()
    def outputs_of(self, x_raw: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   chunk: int = 256) -> torch.Tensor:
        """``fn`` (default: the model) on the non-augmented test view of uint8 inputs, in eval mode and in
        chunks, as float; the model's mode is restored."""
        fn = fn or self.model
        was_training = self.model.training
        self.model.eval()
        try:
            return torch.cat([fn(self.ctx.transform.test(part)).float() for part in x_raw.split(chunk)])
        finally:
            self.model.train(was_training)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores [B, classes] the evaluation takes the argmax of (the model's logits unless the method
        classifies otherwise, e.g. iCaRL's nearest mean of exemplars)."""
        return self.model(x)

    # -- shared helpers ---------------------------------------------------------------------------
    def current_loss(self, logits: torch.Tensor, batch: Batch, masked_head: bool) -> torch.Tensor:
        """Cross-entropy on current data; with ``masked_head`` the logits of classes outside the current
        task are set to -inf first (SparCL's ``--use_cl_mask``; spec/SPARCL.md)."""
        if masked_head:
            logits = mask_to_classes(logits, self.ctx.stream.tasks[batch.task].classes)
        return F.cross_entropy(logits, batch.y)


def mask_to_classes(logits: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Logits with every column outside ``classes`` set to -inf (a copy; the input is untouched)."""
    return logits.masked_fill(_outside(tuple(classes), logits.shape[1], logits.device), float("-inf"))


@functools.lru_cache(maxsize=256)
def _outside(classes: tuple[int, ...], width: int, device: torch.device) -> torch.Tensor:
    """Bool [width]: True at the columns NOT in ``classes`` (built once per task and device, read-only:
    the masked head runs it every step)."""
    out = torch.ones(width, dtype=torch.bool, device=device)
    out[list(classes)] = False
    return out

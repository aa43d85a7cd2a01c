"""What every buffer-based method shares: the buffer, replay draws, the per-step buffer update.

The buffer is updated after every optimizer step with the NON-augmented inputs (``batch.x_raw``) and, for
DER-style methods, the logits of that step's forward on the augmented view (``out.logits.detach()``), as
mammoth does. With the ``after-task`` policy the buffer is instead filled once at task end.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.continual.base import ContinualMethod, MethodContext
from sparsecl.continual.buffer import Buffer, BufferItems, BufferPolicy
from sparsecl.contract import StepOutput
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task
from sparsecl.distributed import current as current_dist


def spawn_generator(parent: torch.Generator, device: torch.device) -> torch.Generator:
    """A new generator on ``device``, seeded by one draw from ``parent``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=parent, device=parent.device))
    return torch.Generator(device=device).manual_seed(seed)


class RehearsalMethod(ContinualMethod):
    """Base of the buffer methods (ER, DER, DER++, A-GEM, ER-ACE).

    Examples that Dynamic Data Removal took out of the task are not trained on, so they are never offered
    to the buffer (online policies) nor drawn at task end (``state.active_idx``). The buffer's policy draws from a generator of its own (spawned from ``ctx.generator``), so what is
    stored does not depend on how often it is replayed; replay draws and their augmentation use
    ``ctx.generator``.
    """

    store_logits = False
    options: tuple[str, ...] = ("buffer_size", "buffer_policy", "replay_batch_size", "masked_head", "replay_from_task")

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.buffer = Buffer(
            cfg.buffer_size,
            ctx.stream.dataset.input_shape,
            ctx.stream.num_classes,
            device=ctx.device,
            generator=spawn_generator(ctx.generator, ctx.device),
            policy=self.buffer_policy(),
            store_logits=self.store_logits,
        )
        # no layer whose output depends on the other rows of its batch (BatchNorm in training mode)
        self.batch_independent = not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

    def buffer_policy(self) -> str | BufferPolicy:
        """The buffer's policy: the configured ``buffer_policy`` (a method with its own memory overrides)."""
        return self.cfg.buffer_policy

    def forward_parts(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Logits of several input batches (current, replay draws).

        Mammoth forwards each batch on its own; with BatchNorm that matters (batch statistics), so it is
        kept there. A model without batch-dependent layers gives the same logits from ONE forward over
        the concatenation (up to float summation order), which on small batches is much faster.
        """
        if not self.batch_independent:
            return [self.model(x) for x in xs]
        return list(self.model(torch.cat(xs)).split([x.shape[0] for x in xs]))

    replay_draws = 1  # replay minibatches drawn per step (forwarded together with the current batch)

    def forward_batch(self, batch_size: int) -> int:
        if not self.batch_independent:
            return batch_size
        return batch_size + self.replay_draws * (self.cfg.replay_batch_size or batch_size)

    # -- replay -----------------------------------------------------------------------------------
    def replays(self, batch: Batch) -> bool:
        """Whether this step draws from the buffer: it holds something and the batch's task is at least
        ``replay_from_task`` (0: from the first task on, as mammoth; 1: from the second, as the SparCL
        release, whose buffer fills during task 0 but is first replayed in task 1)."""
        return not self.buffer.empty and batch.task >= self.cfg.replay_from_task

    def replay_size(self, batch: Batch) -> int:
        """``replay_batch_size``, or the current batch's size when it is 0."""
        return self.cfg.replay_batch_size or len(batch)

    def replay(self, n: int, among: torch.Tensor | None = None) -> BufferItems:
        """min(n, held) buffer examples drawn without replacement (with ``among``: from those slots only);
        ``x`` is their TRAINING view (augmented, normalised float), the rest as stored.

        On N processes every rank draws (and augments) the same global draw from the shared generator and
        keeps its rows of it (``Dist.rows``): replay minibatches are split across ranks like the batch."""
        items = self.buffer.get(self.buffer.sample(n, self.ctx.generator, among))
        items = items._replace(x=self.ctx.transform.train(items.x, self.ctx.generator))
        dist = current_dist()
        if not dist.active:
            return items
        rows = dist.rows(items.y.shape[0])
        return BufferItems(*(None if t is None else t[rows] for t in items))

    # -- buffer updates ---------------------------------------------------------------------------
    def after_step(self, state: Any, batch: Batch, out: StepOutput) -> None:
        if not self.buffer.online:
            return
        x, y = batch.x_raw, batch.y
        logits = out.logits.detach() if self.store_logits else None
        self.buffer.add(x, y, logits, task=batch.task)

    def on_task_end(self, state: Any, task: Task) -> None:
        if not self.buffer.online:
            self._fill_after_task(state, task)

    def _fill_after_task(self, state: Any, task: Task) -> None:
        """After-task policy: a random subset of the task's (still active) training examples.

        Candidates are the loop's ``state.active_idx`` (what Dynamic Data Removal left), else the task's
        split. DER targets are the logits of the model at task end on the non-augmented test view, in
        eval mode (no online logits exist under this policy).
        """
        cand = self.finished_examples(state, task)
        gen = self.ctx.generator
        perm = torch.randperm(cand.numel(), generator=gen, device=gen.device).to(cand.device)
        idx = cand[perm[: self.buffer.task_quota()]]
        ds = self.ctx.stream.dataset
        x = task.inputs(ds.x_train[idx])
        logits = self.outputs_of(x) if self.store_logits else None
        self.buffer.add_task(x, ds.y_train[idx], logits, task.id)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # ctx.generator is the caller's (the run saves it with its other generators); the buffer's is ours
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.buffer.load_state_dict(sd["buffer"])

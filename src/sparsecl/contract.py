"""The named moments of the loop, and the small base class of everything plugged into them.

One training step, as data flowing through it (ARCHITECTURE.md):
batch -> ``before_forward`` -> method.compute_loss -> ``before_backward`` -> backward -> ``after_backward`` -> stepper.step() (optimizer or mask
engine) -> ``after_step`` -> ... ``on_epoch_end`` ... ``on_task_start`` / ``on_task_end``.
Components never reach into the loop's locals: what they may read or change is on ``LoopState``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from sparsecl.data.batch import Batch
from sparsecl.data.stream import Stream, Task


@dataclass
class StepOutput:
    """What a continual method's loss computation produced for one step.

    loss:      the scalar to back-propagate.
    logits:    the model's logits on the current batch (``batch.x``), attached to the graph; components
               detach what they keep (DER's buffer logits, DDR's correctness record).
    n_forward: examples forwarded AND back-propagated this step (current batch + replay draws): the
               count training FLOPs and ``examples_processed`` are charged for.
    n_forward_only: examples forwarded without a backward pass (e.g. logits computed under no_grad).
    parts:     the loss split by data source, summing to ``loss``: ``{"current": ..., "buffer": ...}``
               (rehearsal methods). SparCL's importance scores need the two gradients separately.
    extra_backward: backward passes over this step's graph besides the loop's own (SparCL's gradient
               split, ``sparcl.gradsplit``), each over the ``n_forward`` examples: the FLOPs meter charges them.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    n_forward: int
    n_forward_only: int = 0
    parts: dict[str, torch.Tensor] | None = None
    extra_backward: int = 0


@dataclass
class LoopState:
    """The loop's public state: counters plus the things components may legitimately change.

    ``active_idx`` is the current task's set of training examples for the NEXT epoch; Dynamic Data
    Removal shrinks it at epoch ends, and it is reset to the task's full split at every task start.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    stream: Stream | None  # None in a loop of your own (no component reads it)
    device: torch.device
    total_steps: int
    task: int = 0
    epoch: int = 0  # epoch within the current task
    epochs_per_task: int = 1
    step: int = 0  # global optimizer steps so far
    task_step: int = 0  # steps within the current task
    steps_per_task: int = 1  # planned steps of the current task (at the full split size)
    active_idx: torch.Tensor | None = None
    task_size: int = 0  # examples in the task's full training set (what epoch fractions are relative to)
    task_progress: float = 0.0  # fraction of the current task done: (epoch + batches done / batches) / epochs
    # parameter name -> bool mask of the weights the optimizer may change (the mask engine's current masks;
    # none: dense), for components that constrain the update itself (A-GEM's projection)
    weight_masks: Callable[[], dict[str, torch.Tensor]] = dict


class Component:
    """Base class of everything the loop calls at its named moments. Override only what you need.

    All state that determines the future must round-trip through ``state_dict``/``load_state_dict``.
    """

    def on_task_start(self, state: LoopState, task: Task) -> None:
        pass

    def on_epoch_start(self, state: LoopState, task: Task) -> None:
        pass

    def before_forward(self, state: LoopState, batch: Batch) -> None:
        pass

    def needs_dense_grad(self, state: LoopState) -> bool:
        """Whether this step's backward must give the gradients of INACTIVE weights too (asked before the
        forward; a CSR-executing layer then computes its dense product for this step)."""
        return False

    def before_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        pass

    def after_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        pass

    def after_step(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        pass

    def on_epoch_end(self, state: LoopState, task: Task) -> None:
        pass

    def on_task_end(self, state: LoopState, task: Task) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


class Pipeline(Component):
    """Named components called in their order at every moment; their state is stored by name.

    ``components``: name -> component, in calling order. ``order`` (optional): the known names in the
    order they must run in; a pipeline whose components appear in another relative order is refused (the
    run builder's order and its reasons: ``sparsecl.train.build.PIPELINE_ORDER``). Names outside ``order``
    may sit anywhere.
    """

    def __init__(self, components: dict[str, Component], order: tuple[str, ...] = ()) -> None:
        self.components = dict(components)
        ranked = [n for n in self.components if n in order]
        if ranked != sorted(ranked, key=order.index):
            raise ValueError(f"components in the wrong order: {', '.join(ranked)}; they must run as "
                             f"{', '.join(n for n in order if n in ranked)}")

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components.values())

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    def __contains__(self, name: object) -> bool:
        return name in self.components

    def names(self) -> list[str]:
        return list(self.components)

    def on_task_start(self, state: LoopState, task: Task) -> None:
        for c in self:
            c.on_task_start(state, task)

    def on_epoch_start(self, state: LoopState, task: Task) -> None:
        for c in self:
            c.on_epoch_start(state, task)

    def before_forward(self, state: LoopState, batch: Batch) -> None:
        for c in self:
            c.before_forward(state, batch)

    def needs_dense_grad(self, state: LoopState) -> bool:
        return any(c.needs_dense_grad(state) for c in self)

    def before_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        for c in self:
            c.before_backward(state, batch, out)

    def after_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        for c in self:
            c.after_backward(state, batch, out)

    def after_step(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        for c in self:
            c.after_step(state, batch, out)

    def on_epoch_end(self, state: LoopState, task: Task) -> None:
        for c in self:
            c.on_epoch_end(state, task)

    def on_task_end(self, state: LoopState, task: Task) -> None:
        for c in self:
            c.on_task_end(state, task)

    def state_dict(self) -> dict[str, Any]:
        return {name: c.state_dict() for name, c in self.components.items()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if set(sd) != set(self.components):
            raise ValueError(f"component state for {', '.join(sd) or '(none)'} does not match this pipeline's "
                             f"components {', '.join(self.components) or '(none)'}")
        for name, c in self.components.items():
            c.load_state_dict(sd[name])

"""Task-aware Dynamic Masking (SparCL, Wang et al. NeurIPS 2022, Sec. 3.1): weight sparsity.

Continual weight importance (paper form, the default):

    CWI(w) = |w| + alpha_w |dL~(D_t)/dw| + beta_w |dL(M)/dw|

with the current-task (masked-head) and buffer gradients summed in absolute value over
``tdm_grad_batches`` batches. Release form: ``|w| + alpha_w |g|`` with g the gradient of the total loss
of ONE batch (the release merges the two terms).

Per-task schedule (release: s = target sparsity, e = 1 %, 50 epochs, delta_k = 5), as fractions of a task:

| when               | layer density goes                   | how                                       |
|--------------------|--------------------------------------|-------------------------------------------|
| task start         | d -> d + e          (inter expand)   | grow e at random among inactive (or by    |
|                    |                                      | |grad| of the new task, ``tdm_regrow``)   |
| k * interval < frz | current -> d - e -> d (intra cycle)  | drop lowest CWI among active, regrow e    |
| freeze             | current -> d        (inter shrink)   | drop lowest CWI; mask frozen to task end  |

so every task ends at exactly the target density d = 1 - s, and in between the density makes the +/- e
excursions. The very first mask is a per-layer magnitude prune of the random initialisation (release):
the engine runs sparsity method ``magnitude`` under TDM.
Grown weights start at 0 with zero optimizer state (``MaskEngine.set_mask``).

Deviations, documented: (1) events fire at fractions of the task measured in batches, not only at epoch
ends, so a task of one epoch has the full schedule; (2) an event that needs gradients (every shrink,
and gradient regrowth) first collects them over the next ``tdm_grad_batches`` batches (release form:
1), then acts: scores come from the model as it is when the event is due; (3) a task too short for its
schedule skips an event that is still collecting when the next falls due (logged with ``skipped``), and
a shrink not done by the task's end happens then, so the target density holds at every task end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sparsecl.data.batch import Batch
from sparsecl.sparcl.config import SparclConfig
from sparsecl.sparcl.gradsplit import GradientSplit, has_buffer_part
from sparsecl.sparse.masks import count_for_density, drop_smallest, grow_largest
from sparsecl.contract import Component, LoopState, StepOutput


@dataclass(frozen=True)
class Event:
    at: float  # fraction of the task
    kind: str  # "expand" | "cycle" | "shrink"


def task_events(cfg: SparclConfig) -> list[Event]:
    """The per-task schedule: expand at 0, a cycle every interval before the freeze, shrink at freeze."""
    events = [Event(0.0, "expand")]
    k = 1
    while k * cfg.tdm_interval < cfg.tdm_freeze - 1e-9:
        events.append(Event(k * cfg.tdm_interval, "cycle"))
        k += 1
    events.append(Event(cfg.tdm_freeze, "shrink"))
    return events


class TaskAwareDynamicMasking(Component):
    def __init__(self, engine: Any, cfg: SparclConfig, generator: torch.Generator,
                 split: GradientSplit | None = None) -> None:
        if not engine.layers:
            raise ValueError("sparcl.tdm needs sparse layers: the layer filter selected none")
        self.engine, self.cfg, self.generator = engine, cfg, generator
        self.events = task_events(cfg)
        self.names = [layer.name for layer in engine.layers]
        self.params = [layer.param for layer in engine.layers]
        # the current-task gradient, shared with DGM when both run (one extra backward per step)
        self.split = split if split is not None else GradientSplit({})
        self.split.register(dict(zip(self.names, self.params)))
        self.target = engine.counts_for()  # exact active count per layer at the target density
        self.extra = [count_for_density(layer.numel, cfg.tdm_step) for layer in engine.layers]  # e per layer
        self.paper = cfg.tdm_importance == "paper"
        self.batches_needed = cfg.tdm_grad_batches if self.paper else 1
        self.next_event = 0  # index into self.events for the current task
        self.collected = 0  # batches of gradients collected for the pending event
        self.g_cur: list[torch.Tensor] | None = None  # sum |current-task grad| (paper) / |total grad| (release)
        self.g_buf: list[torch.Tensor] | None = None  # sum |buffer grad| (paper form only)
        self.log: list[dict[str, Any]] = []  # (task, event, densities) per applied event
        self._pending_gcur: list[torch.Tensor] | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def on_task_start(self, state: LoopState, task: Any) -> None:
        self.next_event, self.collected = 0, 0
        self.g_cur = self.g_buf = None
        if self._needs_grads(self.events[0]):
            return  # gradient regrowth: the expand waits for the new task's gradients
        self._apply(self.events[0], state)
        self.next_event = 1

    def _due_index(self, state: LoopState) -> int:
        """Index of the event the schedule is at: the pending one, or the latest that supersedes it. A
        task too short for the schedule (an event still collecting gradients when the next falls due)
        skips to the later event, so nothing fires after the freeze. A pure query; ``_skip`` commits it."""
        i = self.next_event
        while i + 1 < len(self.events) and state.task_progress + 1e-9 >= self.events[i + 1].at:
            i += 1
        return i

    def _due(self, state: LoopState) -> Event | None:
        """The event to act on now, if any (pure: no state changes)."""
        i = self._due_index(state)
        if i >= len(self.events):
            return None
        ev = self.events[i]
        return ev if state.task_progress + 1e-9 >= ev.at else None

    def _skip(self, state: LoopState) -> None:
        """Log and pass the events superseded by the due one (see ``_due_index``); the hooks that act call it
        first, so within a step only the first call changes anything."""
        for i in range(self.next_event, self._due_index(state)):
            ev = self.events[i]
            self.log.append({"task": state.task, "event": ev.kind, "at": ev.at, "skipped": True})
        self.next_event = max(self.next_event, self._due_index(state))

    def on_task_end(self, state: LoopState, task: Any) -> None:
        """The freeze shrink always happens: a task that ended before it could collect its gradients
        shrinks now, on what it collected (|w| alone if nothing), so every task ends at the target."""
        if self.next_event < len(self.events):
            self._skip(state)  # log the events the shrink supersedes
            self._apply(self.events[-1], state)
            self.next_event = len(self.events)

    def _needs_grads(self, ev: Event) -> bool:
        return ev.kind != "expand" or self.cfg.tdm_regrow == "gradient"

    def needs_dense_grad(self, state: LoopState) -> bool:
        """Gradient regrowth ranks INACTIVE weights by their gradient: it needs dense gradients while it
        collects them for a due event (drops rank active weights only)."""
        ev = self._due(state)
        return ev is not None and self.cfg.tdm_regrow == "gradient" and self._needs_grads(ev)

    # -- gradient collection ----------------------------------------------------------------------
    def before_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        self._skip(state)
        ev = self._due(state)
        if ev is not None and self._needs_grads(ev) and self.paper and has_buffer_part(out):
            self._pending_gcur = self.split.current(out, self.names)

    def after_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        self._skip(state)
        ev = self._due(state)
        if ev is None or not self._needs_grads(ev):
            return
        total = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.paper and self._pending_gcur is not None:
            cur = [g.abs() for g in self._pending_gcur]
            buf = [(t - g).abs() for t, g in zip(total, self._pending_gcur)]
        else:  # no buffer term (or release form): the total gradient is the current-task gradient
            cur, buf = [t.abs() for t in total], None
        self._pending_gcur = None
        if self.g_cur is None or not self.paper:
            self.g_cur, self.g_buf = cur, buf
        else:
            torch._foreach_add_(self.g_cur, cur)
            if buf is not None:
                self.g_buf = buf if self.g_buf is None else torch._foreach_add(self.g_buf, buf)
        self.collected += 1

    def after_step(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        self._skip(state)
        ev = self._due(state)
        if ev is None or (self._needs_grads(ev) and self.collected < self.batches_needed):
            return
        self._apply(ev, state)
        self.next_event += 1
        self.collected = 0
        self.g_cur = self.g_buf = None

    # -- mask changes -----------------------------------------------------------------------------
    def importance(self, i: int) -> torch.Tensor:
        """CWI of layer i from the collected gradients (|w| alone if none were collected)."""
        w = self.params[i].detach().abs()
        if self.g_cur is None:
            return w
        if not self.paper:
            return w + self.cfg.tdm_alpha_w * self.g_cur[i]
        score = w + self.cfg.tdm_alpha_w * self.g_cur[i]
        if self.g_buf is not None:
            score = score + self.cfg.tdm_beta_w * self.g_buf[i]
        return score

    def _grow(self, i: int, mask: torch.Tensor, n: int) -> torch.Tensor:
        if self.cfg.tdm_regrow == "gradient" and self.g_cur is not None:
            score = self.g_cur[i] if self.g_buf is None else self.g_cur[i] + self.g_buf[i]
        else:
            score = torch.rand(mask.shape, generator=self.generator, device=self.generator.device).to(mask.device)
        return grow_largest(mask, score, n, self.generator)

    def _apply(self, ev: Event, state: LoopState) -> None:
        masks = self.engine.masks
        for i, name in enumerate(self.names):
            mask, count, target, e = masks[name], self.engine.layers[i].count, self.target[i], self.extra[i]
            if ev.kind == "expand":
                new = self._grow(i, mask, min(e, mask.numel() - count))
            else:
                low = target - e if ev.kind == "cycle" else target
                new = drop_smallest(mask, self.importance(i), max(count - low, 0), self.generator)
                if ev.kind == "cycle":
                    # install the drop first: a weight dropped and regrown in the same cycle restarts at 0
                    # with zero optimizer state, like every regrown weight (release, spec)
                    self.engine.set_mask(name, new)
                    new = self._grow(i, new, target - low)
            self.engine.set_mask(name, new)
        self.log.append({"task": state.task, "event": ev.kind, "at": ev.at,
                         "density": self.engine.densities()["overall"]})

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"next_event": self.next_event, "collected": self.collected, "g_cur": self.g_cur,
                "g_buf": self.g_buf, "log": list(self.log)}  # the generator is the caller's to save

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        dev = self.params[0].device
        move = (lambda gs: None if gs is None else [g.to(dev) for g in gs])
        self.next_event, self.collected = sd["next_event"], sd["collected"]
        self.g_cur, self.g_buf = move(sd["g_cur"]), move(sd["g_buf"])
        self.log = list(sd["log"])

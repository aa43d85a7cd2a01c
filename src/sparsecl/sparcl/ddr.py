"""Dynamic Data Removal (SparCL, Wang et al. NeurIPS 2022, Sec. 3.2): data sparsity.

Per training example of the current task, the correctness of its (unmasked-head) prediction is recorded
after every forward. At each scheduled removal the examples are scored by their number of forgetting
events (correct -> wrong transitions, Toneva et al. 2019) since the last removal; an example never
predicted correctly in that window counts as the hardest (score = +inf). The lowest-scoring (easiest)
examples are removed from the task's training set and the window's statistics (event counts, learned
flags) reset. The correctness of each example's LAST presentation is kept across a removal, so the first
presentation after it counts an event against the one before. Each task restarts from its full split.

Few epochs per task: the release removes every 5 of 50 epochs, so a window holds 5 presentations of each
example. At 5-10 epochs per task the removals fall one epoch apart and a window holds ONE presentation: an
example wrong at it is "never learned" (+inf) whatever its history, one right at it has no event in the
window, so the score only splits right from wrong and the removal is random among the examples right at
their last presentation. ``window="task"`` (``sparcl.ddr_window=task``, a deviation) counts events and
learned flags since the task began instead, so later removals rank by the whole history.

Schedule (release: 30 % of the data in 4 equal steps at epochs 5, 10, 15, 20 of 50) is written as
fractions of a task: removal k falls at ``ddr_start + k * ddr_interval``. Deviation, documented: a
removal takes effect at the first EPOCH END at or after its scheduled fraction (as in the release, which
removes between epochs); removals that fall on the same epoch end are merged. Step k removes
``round(rho N (k+1) / K) - round(rho N k / K)`` examples, so the total is exactly ``round(rho N)``.
Ties in the score are broken at random from the component's own generator.

Correctness is recorded only while a removal can still follow in the task: not after its last removal
and not in its last epoch (at the default schedule that skips the bookkeeping for 60 % of every task).

Removed examples are not trained on again within the task, so they are never offered to the buffer
again either: the buffer leans towards the hard examples that remain.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task
from sparsecl.contract import Component, LoopState, StepOutput


DDR_WINDOWS = ("removal", "task")  # what a removal scores: since the last removal | since the task began


class DynamicDataRemoval(Component):
    def __init__(self, num_examples: int, ratio: float, removals: int, start: float, interval: float,
                 generator: torch.Generator, device: torch.device, window: str = "removal") -> None:
        if window not in DDR_WINDOWS:
            raise ValueError(f"DDR window must be one of {', '.join(DDR_WINDOWS)}, got {window!r}")
        self.ratio, self.removals, self.start, self.interval = ratio, removals, start, interval
        self.window = window
        self.generator = generator
        n = num_examples
        self.prev = torch.full((n,), -1, dtype=torch.int8, device=device)  # -1 unseen, 0 wrong, 1 right
        self.forgets = torch.zeros(n, dtype=torch.int32, device=device)
        self.learned = torch.zeros(n, dtype=torch.bool, device=device)
        self.done = 0  # removal steps carried out in the current task
        self.full_size = 0
        self.history: list[dict[str, Any]] = []  # (task, epoch, removed, remaining) per removal event

    @classmethod
    def from_config(cls, cfg: Any, num_examples: int, generator: torch.Generator,
                    device: torch.device | str) -> "DynamicDataRemoval":
        """From ``SparclConfig``'s ``ddr_*`` fields; ``num_examples``: one more than the largest example index."""
        return cls(num_examples, cfg.ddr_ratio, cfg.ddr_removals, cfg.ddr_start, cfg.ddr_interval, generator,
                   torch.device(device), window=cfg.ddr_window)

    def on_task_start(self, state: LoopState, task: Task) -> None:
        self.done = 0
        self.full_size = int(state.active_idx.numel()) if state.active_idx is not None else 0
        self.prev.fill_(-1)
        self._reset()

    def _reset(self) -> None:
        """A new window: its event counts and learned flags start afresh (``prev`` is the history)."""
        self.forgets.zero_()
        self.learned.zero_()

    def after_step(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        if self.done >= self.removals or state.epoch + 1 >= state.epochs_per_task:
            return  # no removal can follow in this task: its statistics would never be read
        idx = batch.idx  # unique within a batch (an epoch is a permutation)
        correct = out.logits.detach().argmax(1) == batch.y
        now = correct.to(torch.int8)
        # a forgetting event: right before (1), wrong now (0); unseen (-1) and wrong (0) never exceed ``now``
        self.forgets.index_add_(0, idx, (self.prev.index_select(0, idx) > now).int())
        self.learned.index_copy_(0, idx, self.learned.index_select(0, idx) | correct)
        self.prev.index_copy_(0, idx, now)

    def due(self, progress: float) -> int:
        """How many removal steps are due by task progress ``progress`` (in [0, 1])."""
        eps = 1e-9
        return sum(1 for k in range(self.removals) if self.start + k * self.interval <= progress + eps)

    def count(self, k: int) -> int:
        """Examples removed by step k (0-based): exact total round(rho N) over the K steps."""
        total = self.ratio * self.full_size
        return round(total * (k + 1) / self.removals) - round(total * k / self.removals)

    def on_epoch_end(self, state: LoopState, task: Task) -> None:
        target = self.due((state.epoch + 1) / state.epochs_per_task)
        if target <= self.done or (state.epoch + 1) >= state.epochs_per_task:
            return  # nothing due, or the task is over (nothing would train on the smaller set)
        n = sum(self.count(k) for k in range(self.done, target))
        self.done = target
        active = state.active_idx
        score = self.forgets[active].float()
        score[~self.learned[active]] = float("inf")
        # lexicographic (score, random tie-break): add uniform noise in [0, 0.5) to integer scores
        noise = torch.rand(active.numel(), generator=self.generator, device=self.generator.device).to(score.device)
        order = torch.argsort(score + 0.5 * noise, stable=True)
        keep = torch.ones(active.numel(), dtype=torch.bool, device=active.device)
        keep[order[:n]] = False
        state.active_idx = active[keep]
        self.history.append({"task": task.id, "epoch": state.epoch, "removed": n,
                             "remaining": int(state.active_idx.numel())})
        if self.window == "removal":
            self._reset()

    def state_dict(self) -> dict[str, Any]:
        return {"prev": self.prev, "forgets": self.forgets, "learned": self.learned, "done": self.done,
                "full_size": self.full_size, "history": list(self.history)}  # the generator is the caller's to save

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.prev.copy_(sd["prev"])
        self.forgets.copy_(sd["forgets"])
        self.learned.copy_(sd["learned"])
        self.done, self.full_size, self.history = sd["done"], sd["full_size"], list(sd["history"])

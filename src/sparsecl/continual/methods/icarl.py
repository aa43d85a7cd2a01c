"""iCaRL (Rebuffi et al., CVPR 2017, "iCaRL: Incremental Classifier and Representation Learning",
arXiv 1611.07725): mammoth's training protocol, the paper's feature handling.

* Training set: from the second task on, the task's examples joined by the exemplars (mammoth's
  ``icarl_replay``): one epoch passes over both, batches mix them. Exemplar j is example index N + j
  (N training examples), so the loop, the sampler and Dynamic Data Removal handle it like any other.
* Loss: binary cross-entropy with logits over the classes seen so far, the current task's included.
  Targets: the one-hot label on the current task's classes and, on earlier classes, the sigmoid outputs
  of the network frozen at the end of the previous task (knowledge distillation), for every example of
  the batch.
* Exemplars, at every task end: m = B // k per class for the k classes seen (mammoth: the remainder of
  B stays unused). Earlier classes keep their first m exemplars (a class's exemplars are stored in herding
  order, which is priority order); each new class gets m chosen by herding among its training examples:
  greedily the example whose feature brings the mean of those chosen closest to the class's mean feature.
* Classification: nearest mean of exemplars. Class means of the exemplars' features, renormalised, are
  computed at task end; a test example's score for class c is minus the squared distance of its feature
  to c's mean (unseen classes -inf), so Class-IL and Task-IL take the argmax as for logits.

Features are the classifier's input (``models.logits_and_features``) on the non-augmented test view in
eval mode, L2-normalised, and class means renormalised, as in the paper ("all feature vectors are
L2-normalized, and the results of any operation on feature vectors, e.g. averages, are also
re-normalized"). Deviations from mammoth: mammoth herds and classifies on raw features, and averages
its class means batch by batch with a running halving (later batches weigh more); here the means are
exact. mammoth's extra L2 penalty ``wd_reg`` is the optimizer's ``weight_decay``; exemplar candidates are
the task's training examples still active under Dynamic Data Removal. ``sparsecl eval`` of an exported
iCaRL model classifies with the network's head: the export holds no exemplars.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.base import MethodContext
from sparsecl.continual.buffer import Buffer, BufferItems, BufferPolicy
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.frozen import DistilsPreviousNetwork
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task
from sparsecl.models import logits_and_features


def rank_within_class(y: torch.Tensor) -> torch.Tensor:
    """int64 [n]: how many earlier positions hold the same label as position i."""
    perm = y.argsort(stable=True)
    counts = torch.bincount(y)
    start = counts.cumsum(0) - counts
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(y.numel(), device=y.device) - start[y[perm]]
    return rank


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of ``m`` rows of ``features`` ([n, D], L2-normalised) in herding order (iCaRL, Alg. 4):
    the k-th is the row not yet chosen that minimises || mu - (s + f) / k ||, mu the mean of all rows and s
    the sum of the k - 1 rows chosen before. Expanded, k^2 times that squared distance is
    ||f||^2 - 2 (k mu - s) . f plus a constant, so each pick is one matrix-vector product."""
    mu = features.mean(0)
    sq = features.pow(2).sum(1)
    chosen = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    total = torch.zeros_like(mu)
    order = []
    for k in range(1, min(m, features.shape[0]) + 1):
        cost = (sq - 2 * (features @ (k * mu - total))).masked_fill_(chosen, float("inf"))
        i = int(cost.argmin())
        order.append(i)
        chosen[i] = True
        total += features[i]
    return torch.tensor(order, dtype=torch.int64, device=features.device)


class ExemplarSets(BufferPolicy):
    """iCaRL's memory: B // k exemplars for each of the k classes seen, each class's kept in the order
    given (its herding order), so shrinking a class keeps its first exemplars. Fills at task end only."""

    online = False

    def fill_task(self, buf: Buffer, items: BufferItems, task: int) -> None:
        m = buf.capacity // int(torch.cat([buf.y, items.y]).unique().numel())
        buf.retain((rank_within_class(buf.y) < m).nonzero().flatten())
        take = (rank_within_class(items.y) < m).nonzero().flatten()
        buf.extend(items.x.index_select(0, take), items.y.index_select(0, take), None, task)


@CL_METHODS.register("icarl")
class ICaRL(DistilsPreviousNetwork, RehearsalMethod):
    """See the module docstring. Class- and task-incremental streams only (the classes of a task must be
    new: the distillation targets are the earlier classes' outputs)."""

    options: tuple[str, ...] = ("buffer_size",)
    replay_draws = 0  # the exemplars come through the training set, not through replay draws
    needs_new_classes = True

    def buffer_policy(self) -> ExemplarSets:
        return ExemplarSets()

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        self.means: torch.Tensor | None = None  # [K, D] renormalised class means of the exemplars' features
        self._n = int(ctx.stream.dataset.x_train.shape[0])

    # -- training set: the task's examples and the exemplars --------------------------------------
    def train_indices(self, task: Task) -> torch.Tensor | None:
        exemplars = torch.arange(self._n, self._n + self.buffer.filled, device=task.train_idx.device)
        return torch.cat([task.train_idx, exemplars])

    def train_size(self, task: Task) -> int:
        stream = self.ctx.stream
        earlier = [c for t in stream.tasks[: task.id] for c in t.classes]
        if not earlier:
            return int(task.train_idx.numel())
        counts = torch.bincount(stream.dataset.y_train, minlength=stream.num_classes)
        m = self.cfg.buffer_size // len(earlier)
        return int(task.train_idx.numel()) + sum(min(m, int(counts[c])) for c in earlier)

    def index_space(self) -> int:
        return self._n + self.cfg.buffer_size

    def make_batch(self, task: Task, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        ds = self.ctx.stream.dataset
        real = idx < self._n
        ex = (~real).nonzero().flatten()
        if ex.numel() == 0:
            return super().make_batch(task, idx, generator)
        at = real.nonzero().flatten()
        x_raw = torch.empty((idx.numel(), *ds.x_train.shape[1:]), dtype=ds.x_train.dtype, device=ds.x_train.device)
        y = torch.empty(idx.numel(), dtype=ds.y_train.dtype, device=ds.y_train.device)
        x_raw[at] = task.inputs(ds.x_train.index_select(0, idx[at]))
        y[at] = ds.y_train.index_select(0, idx[at])
        slots = idx[ex] - self._n
        x_raw[ex], y[ex] = self.buffer.x.index_select(0, slots), self.buffer.y.index_select(0, slots)
        return Batch(self.ctx.transform.train(x_raw, generator), y, x_raw, idx, task.id)

    # -- task end: frozen network, exemplars, class means -----------------------------------------
    def on_task_end(self, state: Any, task: Task) -> None:
        cand = self.finished_examples(state, task)
        ds = self.ctx.stream.dataset
        y = ds.y_train.index_select(0, cand)
        classes = [c for c in task.classes if bool((y == c).any())]
        k = int(self.seen.sum()) + len(classes)
        m = self.buffer.capacity // max(k, 1)
        picks = []
        for c in classes:
            idx = cand[y == c]
            picks.append(idx[herding(self._features(task.inputs(ds.x_train.index_select(0, idx))), m)])
        if picks:
            idx = torch.cat(picks)
            self.buffer.add_task(task.inputs(ds.x_train.index_select(0, idx)), ds.y_train.index_select(0, idx), None,
                                 task.id)
        self.freeze(task.classes)
        self.means = self._class_means()

    def _features(self, x_raw: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of non-augmented uint8 inputs, eval mode."""
        return F.normalize(self.outputs_of(x_raw, lambda x: logits_and_features(self.model, x)[1]), dim=1)

    def _class_means(self) -> torch.Tensor:
        feats = self._features(self.buffer.x)
        means = torch.zeros(self.ctx.stream.num_classes, feats.shape[1], device=feats.device)
        means.index_add_(0, self.buffer.y, feats)
        return F.normalize(means, dim=1)  # a class without exemplars stays 0 and scores -inf below

    # -- classification: nearest mean of exemplars ------------------------------------------------
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.means is None:  # before the first task end: the network's head
            return self.model(x)
        feats = F.normalize(logits_and_features(self.model, x)[1].float(), dim=1)
        dist = torch.cdist(feats, self.means).pow(2)
        held = torch.zeros_like(self.seen).index_fill_(0, self.buffer.y, True)
        return (-dist).masked_fill(~held, float("-inf"))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.previous_state(), "means": self.means}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.load_previous(sd)
        self.means = sd["means"]

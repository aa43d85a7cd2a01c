"""X-DER with cross-entropy on the future heads (Boschini et al., TPAMI 2022, "Class-Incremental Continual
Learning into the eXtended DER-verse", arXiv 2201.00766), in the form of mammoth's ``xder_ce``.

DER++ extended in three ways:

* Memory: reservoir with logits during the first task (as DER++); at every task end the memory becomes
  class-balanced, B // (classes seen) per class (earlier classes keep their first examples), and the
  free room is filled with a random class-balanced subset of the finished task, stored with the
  network's logits at that moment.
* Logit updates ("future past" logits): a stored example's logits for classes it never saw are
  transplanted from the network's current outputs, scaled down to at most ``gamma`` x its stored
  true-class logit: for every held example of an earlier task at each task end (the finished task's
  classes), and during training, for a replayed example of an earlier task drawn for the c-th time,
  with probability 1 / c (the current and later tasks' classes).
* Constraints (``eta``, ``margin``): on current data, the best current-task softmax score must beat the
  best earlier-class score by ``margin``; on current and replayed data, the best logit of the example's
  own task must beat the best logit of the tasks still to come by ``margin``. Hinge penalties, averaged
  over the rows that violate them.

loss = CE over the current and future classes (current data) + alpha MSE(replay 1 logits, stored)
       + beta CE over the earlier classes (replay 2; the first task's classes on the first task) + both
       constraints.

Deviation from mammoth: logits computed at task end (stored with new examples, and the outputs
transplanted into held ones) come from the non-augmented view in eval mode; mammoth uses the augmented
view in train mode with BatchNorm on batch statistics (identical for a network without BatchNorm and
without augmentation, as the Fashion-MNIST MLP). Not included: full X-DER's supervised-contrastive
training of the future heads (mammoth ``xder``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsecl.continual.base import MethodContext, mask_to_classes
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.icarl import rank_within_class
from sparsecl.continual.methods.rehearsal import RehearsalMethod
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Task
from sparsecl.contract import StepOutput


def transplant(old: torch.Tensor, new: torch.Tensor, label: torch.Tensor, cols: torch.Tensor,
               gamma: float) -> torch.Tensor:
    """``old`` [n, K] with columns ``cols`` replaced by ``new``'s; a row whose largest transplanted logit
    exceeds its stored true-class logit g is scaled by gamma g / (that largest), as mammoth's
    ``update_logits``."""
    out = old.clone()
    t = new[:, cols]
    g = old.gather(1, label[:, None]).squeeze(1)
    top = t.max(1).values
    scale = torch.where(top > g, gamma * g / top, torch.ones_like(top))
    out[:, cols] = t * scale[:, None]
    return out


def first_occurrence(idx: torch.Tensor, size: int) -> torch.Tensor:
    """bool [n]: True where ``idx[i]`` (values in [0, size)) did not occur at an earlier position."""
    pos = torch.arange(idx.numel(), device=idx.device)
    first = torch.full((size,), idx.numel(), dtype=torch.int64, device=idx.device)
    first.scatter_reduce_(0, idx, pos, reduce="amin")
    return first[idx] == pos


def _hinge(bad: torch.Tensor, good: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of max_bad + margin - max_good over the rows where it is positive (0 if none)."""
    v = bad.max(1).values + margin - good.max(1).values
    hit = v > 0
    return v[hit].mean() if bool(hit.any()) else v.new_zeros(())


@CL_METHODS.register("xder_ce")
class XDERCE(RehearsalMethod):
    """See the module docstring. Class- and task-incremental streams only."""

    store_logits = True
    replay_draws = 2
    needs_new_classes = True  # its heads are per task
    options: tuple[str, ...] = ("buffer_size", "replay_batch_size", "alpha", "beta", "gamma", "eta", "margin",
                                "replay_from_task")

    def __init__(self, model: torch.nn.Module, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(model, cfg, ctx)
        dev = ctx.device
        self.cols = torch.stack([torch.tensor(t.classes, device=dev) for t in ctx.stream.tasks])  # [T, per task]
        self.task_of = ctx.stream.task_of_class().to(dev)  # class -> task
        self.counter = torch.zeros(cfg.buffer_size, dtype=torch.int64, device=dev)  # replays per slot this task

    def _tasks(self, first: int, last: int) -> torch.Tensor:
        """The classes of tasks first .. last - 1."""
        return self.cols[first:last].flatten()

    def _draw(self, n: int) -> tuple[torch.Tensor, Any]:
        idx = self.buffer.sample(n, self.ctx.generator)
        items = self.buffer.get(idx)
        return idx, items._replace(x=self.ctx.transform.train(items.x, self.ctx.generator))

    def compute_loss(self, batch: Batch) -> StepOutput:
        t, n_tasks, cfg = batch.task, self.cols.shape[0], self.cfg
        cur, n = self.cols[t], len(batch)
        replaying = self.replays(batch)
        if not replaying:
            logits = self.model(batch.x)
        else:
            m = self.replay_size(batch)
            (i1, r1), (i2, r2) = self._draw(m), self._draw(m)
            logits, o1, o2 = self.forward_parts(batch.x, r1.x, r2.x)
            n += i1.numel() + i2.numel()
        stream = F.cross_entropy(mask_to_classes(logits, tuple(self._tasks(t, n_tasks).tolist())), batch.y)
        loss = stream
        bad_rows, good_rows = [], []
        if replaying:
            loss = loss + cfg.alpha * F.mse_loss(o1, r1.logits)
            past = tuple(self._tasks(0, max(t, 1)).tolist())
            loss = loss + cfg.beta * F.cross_entropy(mask_to_classes(o2, past), r2.y)
            idx, outs = torch.cat([i1, i2]), torch.cat([o1, o2])
            labels, stored = torch.cat([r1.y, r2.y]), torch.cat([r1.logits, r2.logits])
            keep = first_occurrence(idx, self.buffer.capacity)
            idx, outs, labels, stored = idx[keep], outs[keep], labels[keep], stored[keep]
            self._update_replayed(t, idx, outs.detach(), labels, stored)
            if t < n_tasks - 1:
                bad_rows.append(outs[:, self._tasks(t + 1, n_tasks)])
                good_rows.append(outs.gather(1, self.cols[self.task_of[labels]]))
        if t > 0:  # past constraint: the current task's best softmax score beats the earlier classes' best
            past_cols = self._tasks(0, t)
            p = F.softmax(logits[:, torch.cat([past_cols, cur])], 1)
            loss = loss + cfg.eta * _hinge(p[:, : past_cols.numel()].detach(), p[:, past_cols.numel():], cfg.margin)
        if t < n_tasks - 1:  # future constraint: the own task's best logit beats the future classes' best
            bad = torch.cat([logits[:, self._tasks(t + 1, n_tasks)], *bad_rows])
            good = torch.cat([logits[:, cur], *good_rows])
            loss = loss + cfg.eta * _hinge(bad, good, cfg.margin)
        # SparCL's importance split: the current-data CE apart, the rest (replay terms, constraints) together
        return StepOutput(loss, logits, n, parts={"current": stream, "buffer": loss - stream})

    @torch.no_grad()
    def _update_replayed(self, t: int, idx: torch.Tensor, outs: torch.Tensor, labels: torch.Tensor,
                         stored: torch.Tensor) -> None:
        """Replayed examples of earlier tasks: the c-th draw of a slot this task transplants the current
        and later tasks' logits with probability 1 / c."""
        earlier = (self.task_of[labels] < t).nonzero().flatten()
        if earlier.numel() == 0:
            return
        self.counter[idx[earlier]] += 1
        u = torch.rand(earlier.numel(), generator=self.ctx.generator, device=self.ctx.generator.device)
        pick = earlier[(u.to(idx.device) * self.counter[idx[earlier]]) < 1]
        if pick.numel():
            cols = self._tasks(t, self.cols.shape[0])
            self.buffer.set_logits(idx[pick], transplant(stored[pick], outs[pick], labels[pick], cols, self.cfg.gamma))

    def after_step(self, state: Any, batch: Batch, out: StepOutput) -> None:
        if batch.task == 0:  # reservoir during the first task only, as DER++
            super().after_step(state, batch, out)

    # -- task end: class-balanced memory, logits of the finished task's classes -------------------
    @torch.no_grad()
    def on_task_end(self, state: Any, task: Task) -> None:
        t, buf, gen = task.id, self.buffer, self.ctx.generator
        per_task = self.cols.shape[1]
        if t == 0:
            buf.retain(torch.zeros(0, dtype=torch.int64, device=buf.device))
        else:
            buf.retain((rank_within_class(buf.y) < buf.capacity // ((t + 1) * per_task)).nonzero().flatten())
        room = buf.capacity - buf.filled
        quota = torch.full((per_task,), room // per_task, dtype=torch.int64)
        quota[torch.randperm(per_task, generator=gen, device=gen.device)[: room % per_task].cpu()] += 1
        cand = self.finished_examples(state, task)
        cand = cand[torch.randperm(cand.numel(), generator=gen, device=gen.device).to(cand.device)]
        ds = self.ctx.stream.dataset
        y = ds.y_train.index_select(0, cand)
        slot = (y[:, None] == self.cols[t][None, :].to(y.device)).long().argmax(1)  # class -> its place in the task
        pick = (rank_within_class(y) < quota.to(y.device)[slot]).nonzero().flatten()
        x = task.inputs(ds.x_train.index_select(0, cand[pick]))
        y = y[pick]
        logits = self.outputs_of(x)
        if t > 0:  # the earlier classes' logits capped below the true class's, as for any transplant
            logits = transplant(logits, logits, y, self._tasks(0, t), self.cfg.gamma)
        buf.extend(x, y, logits, task=t)
        earlier = (self.task_of[buf.y] < t).nonzero().flatten()
        if earlier.numel():  # held examples of earlier tasks learn the finished task's classes' logits
            outs = self.outputs_of(buf.x.index_select(0, earlier))
            buf.set_logits(earlier, transplant(buf.logits.index_select(0, earlier), outs, buf.y.index_select(0, earlier),
                                               self.cols[t], self.cfg.gamma))
        self.counter.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counter": self.counter.clone()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.counter.copy_(sd["counter"])

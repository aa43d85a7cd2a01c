"""What the training loop does differently on N processes: one object, called at a few points of a step.

Every rank holds the whole dataset and the same generators, so every rank draws the same GLOBAL batch
(the sampler's indices, the augmentation of all of it) and keeps its ``rows`` of it (``local``). After
the backward, ONE flat all-reduce (``sync``) carries, weighted by the rank's share w_r = n_r / n:

* every gradient: sum_r w_r g_r is the gradient of the global batch's mean loss, so everything that
  reads gradients after the backward (A-GEM's projection, RigL/SNFS scores, TDM importance, DGM masks,
  clipping, the optimizer) sees the 1-process gradient and does the same thing on every rank;
* BatchNorm running statistics (the share-weighted mean of the ranks' updates; exact for the running
  mean, statistically equivalent for the running variance);
* the loss (weighted: the global mean), the examples forwarded (summed: FLOPs and ``examples_processed``
  count the whole group) and a stop flag (a signal on any rank stops every rank at the same step).

Explicit all-reduce instead of ``DistributedDataParallel``: DDP reduces inside ``backward()`` through
hooks on the parameters, once per backward; here components take extra backward passes of their own
(``torch.autograd.grad`` in SparCL's gradient split and A-GEM's reference gradient, which DDP does not
reduce) and read raw gradients between the backward and the optimizer step. One all-reduce at one known
point (plus ``Dist.reduce_grads`` for those extra gradients) keeps every reader on the global gradient.

After the step, components' ``after_step`` see the GLOBAL batch and the logits gathered from every rank
(``gather_out``): the reservoir buffer, DDR's per-example record, X-DER... receive the same candidates in
the same order as one process would, and draw from the same shared generator, so they stay identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sparsecl.contract import StepOutput
from sparsecl.data.batch import Batch
from sparsecl.data.stream import Stream
from sparsecl.distributed.check import check_identical
from sparsecl.distributed.runtime import Dist

# Methods that cannot be made to match one process on several: what they write and why.
REFUSED_METHODS = {
    "xder_ce": "its online logit transplants write the buffer from each rank's own replay forward",
}


class DataParallel:
    def __init__(self, dist: Dist, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 debug_sync: bool = False) -> None:
        self.dist = dist
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.running = [b for m in norms for b in (m.running_mean, m.running_var) if b is not None]
        self.debug_sync = debug_sync
        self._eval_streams: dict[int, Stream] = {}
        self.stop_requested = False  # some rank was signalled (known after this step's ``sync``)

    # -- a step --------------------------------------------------------------------------------------
    def local(self, batch: Batch) -> Batch:
        """This rank's rows of the global batch; sets the step's gradient weight."""
        n = len(batch)
        self.dist.weight = self.dist.share(n)
        s = self.dist.rows(n)
        return Batch(batch.x[s], batch.y[s], batch.x_raw[s], batch.idx[s], batch.task)

    def sync(self, out: StepOutput, stop: bool) -> torch.Tensor:
        """Reduce gradients, running statistics and counts (one all-reduce, see the module docstring);
        ``out``'s counts become the group's; returns the global loss."""
        grads = [p.grad for p in self.params if p.grad is not None]
        tensors = grads + self.running
        dtype = tensors[0].dtype if tensors else out.loss.dtype
        w = self.dist.weight
        head = torch.cat([t.reshape(-1).to(dtype) for t in tensors]).mul_(w) if tensors else out.loss.new_zeros(0)
        tail = torch.tensor([out.n_forward, out.n_forward_only, float(stop)], dtype=dtype, device=head.device)
        flat = torch.cat([head, out.loss.detach().to(dtype).reshape(1) * w, tail])
        self.dist.sum_(flat)
        for t, chunk in zip(tensors, flat[: head.numel()].split([t.numel() for t in tensors])):
            t.copy_(chunk.view_as(t))
        n_fwd, n_only, stops = flat[head.numel() + 1:].tolist()
        out.n_forward, out.n_forward_only = round(n_fwd), round(n_only)
        self.stop_requested = stops > 0
        return flat[head.numel()]

    def gather_out(self, batch: Batch, out: StepOutput) -> StepOutput:
        """``out`` with the logits of the whole global ``batch`` (rank order), for ``after_step``."""
        return dataclasses.replace(out, logits=self.dist.gather_rows(out.logits.detach(), len(batch)))

    # -- task ends, evaluation, checks ---------------------------------------------------------------
    def adopt_main(self, component: Any) -> None:
        """Rank 0's state of ``component`` on every rank (after task-end work: iCaRL's exemplars, an
        after-task buffer fill), so no rounding difference of a device kernel can split the ranks."""
        state = self.dist.broadcast_state(component.state_dict())
        if not self.dist.is_main:
            component.load_state_dict(state)

    def eval_stream(self, stream: Stream) -> Stream:
        """The stream with each task's test split cut to this rank's rows (evaluation is sharded)."""
        key = id(stream)
        if key not in self._eval_streams:
            tasks = [dataclasses.replace(t, test_idx=t.test_idx[self.dist.rows(t.test_idx.numel())])
                     for t in stream.tasks]
            self._eval_streams[key] = dataclasses.replace(stream, tasks=tasks)
        return self._eval_streams[key]

    def eval_reduce(self, device: torch.device):  # noqa: ANN201 - a callable for ``evaluate``
        def reduce(counts: torch.Tensor) -> torch.Tensor:
            return self.dist.sum_(counts.to(device)).cpu()
        return reduce

    def check(self, state: dict[str, Any], step: int) -> None:
        """``debug_sync``: stop with DivergenceError unless every rank holds the same state."""
        if self.debug_sync:
            check_identical(self.dist, state, step)

    def report(self, counters: dict[str, Any], batch_size: int) -> dict[str, Any]:
        """summary.json's ``distributed`` block: world, backend, per-rank and summed times."""
        keys = ("train_time_s", "train_cpu_time_s", "eval_time_s", "wall_time_s", "cpu_time_s")
        per_rank = self.dist.gather_object({k: float(counters.get(k, 0.0)) for k in keys})
        lo, hi = self.dist.bounds(batch_size)
        return {"world_size": self.dist.world, "backend": self.dist.backend, "global_batch_size": batch_size,
                "rank0_batch_size": hi - lo,
                "per_rank": {k: [r[k] for r in per_rank] for k in keys},
                "summed": {k: sum(r[k] for r in per_rank) for k in keys}}

"""The one training loop over a stream of tasks (a single task is ordinary training).

Resumable by construction: everything that determines the future is in ``checkpoint_state()``, and
the loop re-enters at the saved position (task, epoch, batch cursor). SIGINT/SIGTERM ask for a
checkpoint at the next step boundary and a clean exit.
"""

from __future__ import annotations

import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsecl.configtools import to_dict
from sparsecl.continual.metrics import accuracy_line, evaluate, format_table, summarize
from sparsecl.contract import LoopState
from sparsecl.data.loader import EpochSampler, make_batch
from sparsecl.distributed import current as current_dist
from sparsecl.distributed.step import REFUSED_METHODS, DataParallel
from sparsecl.fileio import save_torch
from sparsecl.train import checkpoint
from sparsecl.train.build import Run
from sparsecl.train.logging import Progress, open_log, write_json
from sparsecl.train.meters import check_loss

LOG_EVERY = 25  # steps between progress-bar refreshes (each costs one host sync)
# Each generator's state is saved once: these two by the object drawing from them (their state dicts are
# complete on their own), the rest in the checkpoint's "generators" (the method's and SparCL's parts leave
# the generators they were given to the run).
SAVED_BY_OWNER = {"masks": "engine", "data": "sampler"}
MIN_STEPS_PER_EPOCH = 20  # fewer optimizer steps per epoch of a task: warn (e.g. digits at batch 128: 12)


def startup_warnings(run: Run) -> list[str]:
    """Settings known to make a run learn little, each one line (printed once, on a fresh start)."""
    out = []
    per_epoch = [(n // run.epochs, t) for t, n in enumerate(run.plan) if n > 0]
    if per_epoch and min(per_epoch)[0] < MIN_STEPS_PER_EPOCH:
        steps, t = min(per_epoch)
        size = run.method.train_size(run.stream.tasks[t])
        out.append(f"warning: task {t + 1} has {steps} optimizer steps per epoch ({size} examples, "
                   f"batch_size={run.cfg.batch_size}); with fewer than {MIN_STEPS_PER_EPOCH} it learns little: lower "
                   "batch_size or raise epochs")
    if sparse_learns_slowly(run.cfg, run.engine.densities()["overall"]):
        out.append("warning: sparse layers with sparsity.init=dense, sparsity.lr_scaling=none and plain SGD "
                   "(momentum 0) learn slowly in short runs (benchmarks/RESULTS.md, issue 21); use "
                   "sparsity.init=rescale sparsity.lr_scaling=auto (the defaults), or momentum=0.9 and long "
                   "training as in the RigL paper")
    return out


def sparse_learns_slowly(cfg, density: float) -> bool:  # noqa: ANN001 - TrainConfig
    """The RigL paper's sparse setting (no init rescaling, no lr scaling) under plain SGD without momentum:
    measured far behind dense at the same steps (benchmarks/RESULTS.md, issue 21)."""
    sp = cfg.sparsity
    return (density < 1 and sp.init == "dense" and sp.lr_scaling == "none" and cfg.optimizer == "sgd"
            and cfg.momentum == 0)


class Interrupted(RuntimeError):
    """The run was asked to stop (SIGINT/SIGTERM); a checkpoint was written."""


@dataclass
class Position:
    """Where the loop is: the next task/epoch to run, and whether that epoch is already under way."""

    task: int = 0
    epoch: int = 0
    in_epoch: bool = False  # True: the sampler's order/cursor continue the current epoch
    task_started: bool = False


class Trainer:
    def __init__(self, run: Run, out_dir: Path, *, stream_out: Any = print, warn_out: Any = None) -> None:
        self.run = run
        cfg = run.cfg
        # N processes (torchrun): every rank trains, rank 0 alone writes the run folder (sparsecl.distributed)
        self.dist = current_dist()
        self.dp = DataParallel(self.dist, run.model, run.optimizer, cfg.debug_sync) if self.dist.active else None
        if self.dp is not None and cfg.continual.method in REFUSED_METHODS:
            raise ValueError(f"method={cfg.continual.method} cannot train on several processes: "
                             f"{REFUSED_METHODS[cfg.continual.method]}; run it with one process")
        self.main = self.dist.is_main
        self.out = Path(out_dir)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.print = stream_out if self.main else (lambda *a, **k: None)
        self.warn = (warn_out or (lambda line: print(line, file=sys.stderr))) if self.main else (lambda line: None)
        self.state = LoopState(run.model, run.optimizer, run.stream, next(run.model.parameters()).device,
                               total_steps=sum(run.plan), epochs_per_task=run.epochs,
                               weight_masks=lambda: run.engine.masks)
        self.sampler = EpochSampler(cfg.batch_size, run.generators["data"], cfg.drop_last)
        self.pos = Position()
        self.log = open_log(self.out, cfg.log, to_dict(cfg)) if self.main else _NoLog()
        self.progress = Progress(cfg.progress and self.main)
        # where no bar is seen (output to a file or a pipe): one line per epoch instead
        self.epoch_lines = self.main and cfg.progress and not (self.progress.enabled and sys.stdout.isatty())
        # settings the config derived (``TrainConfig.resolve``); a resumed run's config is already resolved,
        # so the list comes back from the checkpoint
        self.derived = [dict(d) for d in getattr(cfg, "derived", [])]
        self.acc = {"class_il": [], "task_il": []}
        self.counters = {"train_time_s": 0.0, "eval_time_s": 0.0, "examples_processed": 0, "data_examples": 0,
                         "steps": 0}
        # loss sum, correct, examples of this epoch: one running sum, checkpointed as it is, so where and how
        # often checkpoints are written never changes the grouping of the additions (nor the logged loss)
        self.epoch_sums = torch.zeros(3, dtype=torch.float64, device=self.state.device)
        self._clock = time.monotonic  # for time-based checkpoints; tests substitute a fake clock
        self._last_save = self._clock()
        self._stop: str | None = None
        self._params = [p for g in run.optimizer.param_groups for p in g["params"]]
        self._began = False

    # -- state ---------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        r = self.run
        return {
            "config": to_dict(r.cfg),
            "position": vars(self.pos).copy(),
            "loop": {"step": self.state.step, "task_step": self.state.task_step, "task": self.state.task,
                     "epoch": self.state.epoch, "steps_per_task": self.state.steps_per_task,
                     "task_progress": self.state.task_progress, "task_size": self.state.task_size,
                     "active_idx": self.state.active_idx},
            "model": r.model.state_dict(),
            "optimizer": r.optimizer.state_dict(),
            "engine": r.engine.state_dict(),
            "components": r.components.state_dict(),  # by name
            "sampler": self.sampler.state_dict(),
            "generators": {k: g.get_state() for k, g in r.generators.items() if k not in SAVED_BY_OWNER},
            "metrics": {"acc": self.acc, "counters": self.counters, "epoch_sums": self.epoch_sums.cpu(),
                        "log_offset": self.log.offset(), "began": self._began, "derived": self.derived},
        }

    def replicated_state(self) -> dict[str, Any]:
        """What every rank must hold bit-identically (``debug_sync`` compares it): the checkpoint less its
        config and per-process metrics."""
        state = self.checkpoint_state()
        return {k: v for k, v in state.items() if k not in ("config", "metrics")}

    def load_checkpoint_state(self, ck: dict[str, Any]) -> None:
        r = self.run
        if ck["config"] != to_dict(r.cfg):
            raise checkpoint.CheckpointError("the checkpoint was written by a run with a different config")
        self.pos = Position(**ck["position"])
        lp = ck["loop"]
        self.state.step, self.state.task_step = lp["step"], lp["task_step"]
        self.state.task, self.state.epoch, self.state.steps_per_task = lp["task"], lp["epoch"], lp["steps_per_task"]
        self.state.task_progress, self.state.task_size = lp["task_progress"], lp["task_size"]
        dev = self.state.device
        self.state.active_idx = None if lp["active_idx"] is None else lp["active_idx"].to(dev)
        r.model.load_state_dict(ck["model"])
        r.optimizer.load_state_dict(ck["optimizer"])
        r.engine.load_state_dict(ck["engine"])
        r.components.load_state_dict(_by_name(ck["components"], r.components.names()))
        sd = dict(ck["sampler"])
        if sd["order"] is not None:
            sd["order"] = sd["order"].to(dev)
        self.sampler.load_state_dict(sd)
        for k, s in ck["generators"].items():
            r.generators[k].set_state(s)
        m = ck["metrics"]
        self.acc, self.counters, self._began = m["acc"], m["counters"], m["began"]
        self.derived = m.get("derived", self.derived)  # older checkpoints: none recorded
        self.epoch_sums = m["epoch_sums"].to(dev)
        note = self.log.truncate(m["log_offset"])
        if note:
            self.print(note)

    def save(self) -> None:
        if not self.main:  # every rank holds the same state: rank 0's checkpoint is the group's
            return
        t0 = time.perf_counter()
        path = checkpoint.save(self.checkpoint_state(), self.out)
        self._last_save = self._clock()
        self.counters["checkpoint_time_s"] = self.counters.get("checkpoint_time_s", 0.0) + time.perf_counter() - t0
        self.counters["checkpoint_bytes"] = path.stat().st_size

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        wall0, cpu0 = _clocks()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._begin()
            for t in range(self.pos.task, self.run.stream.num_tasks):
                self._run_task(t)
        finally:
            self.progress.close()
            self.log.close()
            for s, h in previous.items():
                signal.signal(s, h)
        wall, cpu = _clocks()
        self.counters["wall_time_s"] = self.counters.get("wall_time_s", 0.0) + wall - wall0
        self.counters["cpu_time_s"] = self.counters.get("cpu_time_s", 0.0) + cpu - cpu0
        return self._finish()

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self._stop = signal.Signals(signum).name

    def _begin(self) -> None:
        """Initial masks (SNIP scores one batch of the first trained task, from its own generator)."""
        if self._began:
            return
        r = self.run
        first = next(t for t, n in zip(r.stream.tasks, r.plan) if n > 0) if any(r.plan) else r.stream.tasks[0]
        g = torch.Generator(device=self.state.device).manual_seed(r.cfg.seed)

        def closure() -> torch.Tensor:  # plain CE on one batch: no method state (buffers, counters) touched
            idx = first.train_idx[torch.randperm(first.train_idx.numel(), generator=g, device=g.device)[: r.cfg.batch_size]]
            batch = make_batch(r.stream, first, idx, r.transform, g)
            return torch.nn.functional.cross_entropy(r.model(batch.x), batch.y)

        r.engine.begin(closure)
        self._began = True
        for d in self.derived:  # what the config derived from other settings (also in summary.json)
            self.print(f"derived {d['key']}={d['value']} (given {d['given']}): {d['why']}")
        self._log_masks(initial=True)
        for line in startup_warnings(r):  # after begin: the masks' density is known
            self.warn(line)

    def _run_task(self, t: int) -> None:
        r, st = self.run, self.state
        task = r.stream.tasks[t]
        if not self.pos.task_started:
            st.task, st.task_step, st.steps_per_task, st.task_progress = t, 0, r.plan[t], 0.0
            st.active_idx = r.method.train_indices(task)
            st.task_size = 0 if st.active_idx is None else int(st.active_idx.numel())
            for c in r.components:
                c.on_task_start(st, task)
            self._log_masks()
            self.pos.task_started = True
        if st.active_idx is not None and r.plan[t] > 0:
            self.progress.start(f"task {t + 1}/{r.stream.num_tasks}", r.plan[t], initial=st.task_step)
            for e in range(self.pos.epoch, r.epochs):
                self._run_epoch(task, e)
        for c in r.components:
            c.on_task_end(st, task)
        if self.dp is not None:
            self.dp.adopt_main(r.method)  # task-end work (exemplars, after-task fills) as rank 0 did it
        self._log_masks()
        self._evaluate(t)
        self.pos = Position(task=t + 1)
        if r.cfg.checkpoint.at_task_end:
            self.save()

    def _run_epoch(self, task, e: int) -> None:  # noqa: ANN001 - Task
        r, st = self.run, self.state
        cfg = r.cfg
        st.epoch = e
        if not self.pos.in_epoch:
            for c in r.components:
                c.on_epoch_start(st, task)
            self._log_masks()
            self.sampler.start_epoch(st.active_idx)
            self.epoch_sums.zero_()
            self.pos.epoch, self.pos.in_epoch = e, True
        t0 = _clocks()
        self._batches = self.sampler.num_batches(self.sampler.order.numel())
        for idx in self.sampler:
            self._step(task, idx)
            # N processes: stop where every rank stops (the flag is reduced with this step's gradients)
            stop = self._stop
            if self.dp is not None:
                stop = self.dp.stop_requested and (self._stop or "a signal to another rank")
            if stop or self._checkpoint_due(cfg.checkpoint):
                self._flush(t0)
                t0 = _clocks()
                self.save()
                if stop:
                    raise Interrupted(f"stopped by {stop} at step {st.step}; checkpoint written; resume with: "
                                      f"sparsecl train --resume {self.out}")
        self._flush(t0)
        for c in r.components:
            c.on_epoch_end(st, task)
        self._log_masks()
        n = int(self.epoch_sums[2])
        record = {"event": "epoch", "task": task.id, "epoch": e, "step": st.step,
                  "loss": float(self.epoch_sums[0]) / max(n, 1), "train_acc": 100.0 * float(self.epoch_sums[1]) / max(n, 1),
                  "examples": n, "epoch_fraction": n / max(st.task_size, 1),
                  "density": r.engine.densities()["overall"]}
        if r.flops.grad_density is not None:  # DGM: weight-gradient density per layer at the epoch's end
            record["grad_density"] = r.flops.grad_density.grad_densities()
        self.log.write(record)
        self.pos.in_epoch = False
        self.pos.epoch = e + 1
        if self.epoch_lines:
            self.print(f"task {task.id + 1}/{r.stream.num_tasks} epoch {e + 1}/{r.epochs}: loss "
                       f"{float(self.epoch_sums[0]) / max(n, 1):.4f}  train acc "
                       f"{100.0 * float(self.epoch_sums[1]) / max(n, 1):.2f}  step {st.step}/{st.total_steps}")

    def _checkpoint_due(self, ck) -> bool:  # noqa: ANN001 - CheckpointConfig
        """Every ``checkpoint.every`` steps, and ``checkpoint.minutes`` of wall time after the last one."""
        if ck.every and self.state.step % ck.every == 0:
            return True
        return ck.minutes > 0 and self._clock() - self._last_save >= 60.0 * ck.minutes

    def _flush(self, t0: tuple[float, float]) -> None:
        wall, cpu = _clocks()
        self.counters["train_time_s"] += wall - t0[0]
        self.counters["train_cpu_time_s"] = self.counters.get("train_cpu_time_s", 0.0) + cpu - t0[1]

    def _step(self, task, idx: torch.Tensor) -> None:  # noqa: ANN001
        r, st = self.run, self.state
        batch = r.method.make_batch(task, idx, r.generators["augment"])
        local = batch if self.dp is None else self.dp.local(batch)  # N processes: this rank's rows
        r.lr_schedule.apply(st.epoch, (self.sampler.cursor - 1) / max(self._batches, 1))
        for p in self._params:  # optimizer.zero_grad(set_to_none=True) without its profiler wrapping
            p.grad = None
        for c in r.components:
            c.before_forward(st, local)
        out = r.method.compute_loss(local)
        if self.dp is None:
            loss = check_loss(out.loss, r.model, st.step, task.id, batch.x)
        for c in r.components:
            c.before_backward(st, local, out)
        out.loss.backward()
        if self.dp is not None:  # gradients, counts, stop flag reduced; the global loss checked on every rank
            loss = check_loss(self.dp.sync(out, self._stop is not None), r.model, st.step, task.id, local.x)
        for c in r.components:
            c.after_backward(st, local, out)
        if r.cfg.grad_clip is not None:
            r.engine.mask_grads()  # the norm of what the optimizer applies: inactive weights' gradients are 0
            torch.nn.utils.clip_grad_norm_(r.model.parameters(), r.cfg.grad_clip)
        r.engine.step()
        if self.dp is not None:  # after_step sees the global batch and every rank's logits
            out = self.dp.gather_out(batch, out)
        for c in r.components:
            c.after_step(st, batch, out)
        st.step += 1
        if self.dp is not None:
            self.dp.check(self.replicated_state(), st.step)
        if r.engine.mask_changes:  # a mask update in this step (the engine's or a component's)
            self._log_masks()
        st.task_step += 1
        st.task_progress = (st.epoch + self.sampler.cursor / max(self._batches, 1)) / r.epochs
        n = len(batch)
        self.counters["examples_processed"] += out.n_forward
        self.counters["data_examples"] += n
        self.counters["steps"] += 1
        sums = self.epoch_sums
        sums[0] += loss * n
        sums[1] += (out.logits.detach().argmax(1) == batch.y).sum()
        sums[2] += n
        self.progress.update()
        if st.task_step % LOG_EVERY == 0 and self.progress.bar is not None:
            s = self.epoch_sums.tolist()
            self.progress.postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{100 * s[1] / max(s[2], 1):.1f}")

    def _log_masks(self, initial: bool = False) -> None:
        """One ``mask_update`` record when some mask changed since the last one: per-layer density and
        turnover |M_old xor M_new| / (|M_old| + |M_new|) (in [0, 1]; the drop fraction of a prune-and-regrow
        update at constant count). The initial masks (step 0) are logged with ``initial`` and no turnover."""
        changes = self.run.engine.pop_mask_changes()
        if not changes:
            return
        dens = self.run.engine.densities()
        record = {"event": "mask_update", "task": self.state.task, "step": self.state.step,
                  "density": dens["overall"], "layers": dens["layers"]}
        if initial:
            record["initial"] = True
        else:
            numel = {layer.name: layer.numel for layer in self.run.engine.layers}
            turnover = {}
            for name, (dropped, grown) in changes.items():
                after = round(dens["layers"][name] * numel[name])
                turnover[name] = (dropped + grown) / max(2 * after + dropped - grown, 1)
            record["turnover"] = turnover
        self.log.write(record)

    def _evaluate(self, t: int) -> None:
        r = self.run
        t0 = time.perf_counter()
        if self.dp is None:
            cil, til = evaluate(r.model, r.stream, r.transform, t, r.cfg.eval_batch_size, r.method.eval_logits)
        else:  # each rank its share of every test split, correct counts summed
            cil, til = evaluate(r.model, self.dp.eval_stream(r.stream), r.transform, t, r.cfg.eval_batch_size,
                                r.method.eval_logits, reduce=self.dp.eval_reduce(self.state.device))
        self.counters["eval_time_s"] += time.perf_counter() - t0
        self.acc["class_il"].append(cil)
        self.acc["task_il"].append(til)
        dens = r.engine.densities()
        self.log.write({"event": "task_end", "task": t, "step": self.state.step, "class_il": cil, "task_il": til,
                        "avg_class_il": sum(cil) / len(cil), "avg_task_il": sum(til) / len(til),
                        "density": dens["overall"]})
        self.progress.close()
        per_task = til if r.stream.scenario == "task-il" else cil
        self.print(f"task {t + 1}/{r.stream.num_tasks}: {accuracy_line(r.stream.scenario, cil, til)}  (per task: "
                   f"{' '.join(f'{a:.1f}' for a in per_task)})  density {dens['overall']:.4f}")

    def _finish(self) -> dict[str, Any]:
        r = self.run
        dens = r.engine.densities()
        scores = summarize(self.acc["class_il"], self.acc["task_il"])
        summary = {
            "acc_matrix": self.acc,
            "final_avg_acc": {k: s["final_avg"] for k, s in scores.items()},
            "forgetting": {k: s["forgetting"] for k, s in scores.items()},
            "bwt": {k: s["bwt"] for k, s in scores.items()},
            "seed": r.cfg.seed,
            "scenario": r.stream.scenario,
            "evaluated_on": "validation" if r.cfg.validation else "test",
            "derived": self.derived,
            "config": to_dict(r.cfg),
            "train_time_s": self.counters["train_time_s"],
            "eval_time_s": self.counters["eval_time_s"],
            "checkpoint": {"time_s": self.counters.get("checkpoint_time_s", 0.0),
                           "bytes": self.counters.get("checkpoint_bytes", 0)},
            "wall_time_s": self.counters["wall_time_s"],
            "train_cpu_time_s": self.counters.get("train_cpu_time_s", 0.0),
            "cpu_time_s": self.counters["cpu_time_s"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "examples_processed": self.counters["examples_processed"],
            "data_examples": self.counters["data_examples"],
            "steps": self.counters["steps"],
            "flops": r.flops.report(),
            "density": {"overall": dens["overall"], "layers": dens["layers"], "model": r.engine.model_density()},
            "execution": r.execution.paths(),
        }
        if r.distill is not None:
            summary["distill"] = {"teacher": r.cfg.distill.teacher, **r.distill.report()}
        if torch.cuda.is_available() and self.state.device.type == "cuda":
            summary["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        summary["distributed"] = ({"world_size": 1, "backend": "none"} if self.dp is None
                                  else self.dp.report(self.counters, r.cfg.batch_size))
        if not self.main:
            return summary
        write_json(self.out / "summary.json", summary)
        if r.cfg.checkpoint.keep_model:
            save_torch(r.model.state_dict(), self.out / "final_model.pt")
        self.print(format_table(scores, r.stream.scenario))
        return summary


def _by_name(saved: dict[str, Any] | list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Component state by name. Checkpoints written before components had names hold a list in the
    order they ran, which is the order of ``names`` (the run's config decides both); a list of another
    length cannot be matched and is refused."""
    if isinstance(saved, dict):
        return saved
    if len(saved) != len(names):
        raise checkpoint.CheckpointError(f"the checkpoint stores {len(saved)} components by position, this run has "
                                         f"{len(names)} ({', '.join(names)}): it cannot be matched; start the run again")
    return dict(zip(names, saved))


class _NoLog:
    """metrics.jsonl of a rank other than 0: it writes nothing (rank 0 logs the group's figures)."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def offset(self) -> int:
        return 0

    def truncate(self, offset: int) -> None:
        return None

    def close(self) -> None:
        pass


TIMING_KEYS = ("train_time_s", "eval_time_s", "wall_time_s", "train_cpu_time_s", "cpu_time_s", "peak_rss_mb",
               "peak_gpu_mb", "checkpoint")


def _clocks() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time sums every thread of the process, so with n threads busy it
    runs up to n times faster than the wall clock."""
    return time.perf_counter(), time.process_time()

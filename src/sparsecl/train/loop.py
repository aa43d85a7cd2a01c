"""The one training loop over a stream of tasks (a single task is ordinary training).

Resumable by construction: everything that determines the future is in ``checkpoint_state()``, and
the loop re-enters at the saved position (task, epoch, batch cursor). SIGINT/SIGTERM ask for a
checkpoint at the next step boundary and a clean exit.
"""

from __future__ import annotations

import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsecl.configtools import to_dict
from sparsecl.continual.metrics import evaluate, format_table, summarize
from sparsecl.data.loader import EpochSampler, make_batch
from sparsecl.distributed import current as current_dist
from sparsecl.distributed.step import REFUSED_METHODS, DataParallel
from sparsecl.train import checkpoint
from sparsecl.train.build import Run
from sparsecl.contract import LoopState
from sparsecl.train.logging import MetricsLog, Progress, write_json
from sparsecl.train.meters import check_loss

LOG_EVERY = 25  # steps between progress-bar refreshes (each costs one host sync)


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
    def __init__(self, run: Run, out_dir: Path, *, stream_out: Any = print) -> None:
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
        self.state = LoopState(run.model, run.optimizer, run.stream, next(run.model.parameters()).device,
                               total_steps=sum(run.plan), epochs_per_task=run.epochs)
        self.sampler = EpochSampler(cfg.batch_size, run.generators["data"], cfg.drop_last)
        self.pos = Position()
        self.log = MetricsLog(self.out / "metrics.jsonl") if self.main else _NoLog()
        self.progress = Progress(cfg.progress and self.main)
        self.acc = {"class_il": [], "task_il": []}
        self.counters = {"train_time_s": 0.0, "eval_time_s": 0.0, "examples_processed": 0, "data_examples": 0,
                         "steps": 0}
        self.epoch_sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, examples of this epoch
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
            "components": [c.state_dict() for c in r.components],
            "sampler": self.sampler.state_dict(),
            "generators": {k: g.get_state() for k, g in r.generators.items()},
            "metrics": {"acc": self.acc, "counters": self.counters, "epoch_sums": self.epoch_sums,
                        "log_offset": self.log.offset(), "began": self._began},
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
        for c, sd in zip(r.components, ck["components"], strict=True):
            c.load_state_dict(sd)
        sd = dict(ck["sampler"])
        if sd["order"] is not None:
            sd["order"] = sd["order"].to(dev)
        self.sampler.load_state_dict(sd)
        for k, s in ck["generators"].items():
            r.generators[k].set_state(s)
        m = ck["metrics"]
        self.acc, self.counters, self.epoch_sums, self._began = m["acc"], m["counters"], m["epoch_sums"], m["began"]
        self.log.truncate(m["log_offset"])

    def save(self) -> None:
        if not self.main:  # every rank holds the same state: rank 0's checkpoint is the group's
            return
        t0 = time.perf_counter()
        path = checkpoint.save(self.checkpoint_state(), self.out)
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

    def _run_task(self, t: int) -> None:
        r, st = self.run, self.state
        task = r.stream.tasks[t]
        if not self.pos.task_started:
            st.task, st.task_step, st.steps_per_task, st.task_progress = t, 0, r.plan[t], 0.0
            st.active_idx = r.method.train_indices(task)
            st.task_size = 0 if st.active_idx is None else int(st.active_idx.numel())
            for c in r.components:
                c.on_task_start(st, task)
            self.pos.task_started = True
        if st.active_idx is not None and r.plan[t] > 0:
            self.progress.start(f"task {t + 1}/{r.stream.num_tasks}", r.plan[t], initial=st.task_step)
            for e in range(self.pos.epoch, r.epochs):
                self._run_epoch(task, e)
        for c in r.components:
            c.on_task_end(st, task)
        if self.dp is not None:
            self.dp.adopt_main(r.method)  # task-end work (exemplars, after-task fills) as rank 0 did it
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
            self.sampler.start_epoch(st.active_idx)
            self.epoch_sums.zero_()
            self.pos.epoch, self.pos.in_epoch = e, True
        t0 = _clocks()
        self._batches = self.sampler.num_batches(self.sampler.order.numel())
        sums = torch.zeros(3, dtype=torch.float64, device=st.device)
        for idx in self.sampler:
            self._step(task, idx, sums)
            # N processes: stop where every rank stops (the flag is reduced with this step's gradients)
            stop = self._stop if self.dp is None else (self.dp.stop_requested and (self._stop or "a signal to another rank"))
            if stop or (cfg.checkpoint.every and st.step % cfg.checkpoint.every == 0):
                self._flush(sums, t0)
                sums.zero_()
                t0 = _clocks()
                self.save()
                if stop:
                    raise Interrupted(f"stopped by {stop} at step {st.step}; checkpoint written; resume with: "
                                      f"sparsecl train --resume {self.out}")
        self._flush(sums, t0)
        for c in r.components:
            c.on_epoch_end(st, task)
        n = int(self.epoch_sums[2])
        self.log.write({"event": "epoch", "task": task.id, "epoch": e, "step": st.step,
                        "loss": float(self.epoch_sums[0]) / max(n, 1), "train_acc": 100.0 * float(self.epoch_sums[1]) / max(n, 1),
                        "examples": n, "epoch_fraction": n / max(st.task_size, 1),
                        "density": r.engine.densities()["overall"]})
        self.pos.in_epoch = False
        self.pos.epoch = e + 1

    def _flush(self, sums: torch.Tensor, t0: tuple[float, float]) -> None:
        wall, cpu = _clocks()
        self.counters["train_time_s"] += wall - t0[0]
        self.counters["train_cpu_time_s"] = self.counters.get("train_cpu_time_s", 0.0) + cpu - t0[1]
        self.epoch_sums += sums.cpu()

    def _step(self, task, idx: torch.Tensor, sums: torch.Tensor) -> None:  # noqa: ANN001
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
        st.task_step += 1
        st.task_progress = (st.epoch + self.sampler.cursor / max(self._batches, 1)) / r.epochs
        n = len(batch)
        self.counters["examples_processed"] += out.n_forward
        self.counters["data_examples"] += n
        self.counters["steps"] += 1
        sums[0] += loss * n
        sums[1] += (out.logits.detach().argmax(1) == batch.y).sum()
        sums[2] += n
        self.progress.update()
        if st.task_step % LOG_EVERY == 0 and self.progress.bar is not None:
            s = (self.epoch_sums + sums.cpu()).tolist()
            self.progress.postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{100 * s[1] / max(s[2], 1):.1f}")

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
        self.print(f"task {t + 1}/{r.stream.num_tasks}: Class-IL {sum(cil) / len(cil):.2f}  Task-IL "
                   f"{sum(til) / len(til):.2f}  (per task: {' '.join(f'{a:.1f}' for a in cil)})  density {dens['overall']:.4f}")

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
            "evaluated_on": "validation" if r.cfg.validation else "test",
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
            torch.save(r.model.state_dict(), self.out / "final_model.pt")
        self.print(format_table(scores))
        return summary


class _NoLog:
    """metrics.jsonl of a rank other than 0: it writes nothing (rank 0 logs the group's figures)."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def offset(self) -> int:
        return 0

    def truncate(self, offset: int) -> None:
        pass


TIMING_KEYS = ("train_time_s", "eval_time_s", "wall_time_s", "train_cpu_time_s", "cpu_time_s", "peak_rss_mb",
               "peak_gpu_mb", "checkpoint")


def _clocks() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time sums every thread of the process, so with n threads busy it
    runs up to n times faster than the wall clock."""
    return time.perf_counter(), time.process_time()

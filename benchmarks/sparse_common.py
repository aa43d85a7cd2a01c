"""Small helpers of ``bench_sparse.py``: train one config through the public API, summary statistics,
markdown tables and a description of the machine.

Nothing here is specific to one method; ``train_one`` is what a worker process runs for each grid point.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sparsecl.config import TrainConfig
from sparsecl.configtools import make_config
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer

# Every grid run: no progress bar, no checkpoints, no weights written (the run folder is a temp dir).
QUIET = ["progress=false", "checkpoint.at_task_end=false", "checkpoint.keep_model=false"]


def train_one(overrides: Sequence[str]) -> dict[str, Any]:
    """Train ``sparsecl train <overrides>`` in this process; the numbers the benchmark keeps."""
    cfg = make_config(TrainConfig, None, [*QUIET, *overrides])
    t0 = time.perf_counter()
    run = build_run(cfg)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_sparse_") as out:
        s = Trainer(run, Path(out), stream_out=lambda *_: None).fit()
    return {
        "acc": s["final_avg_acc"]["class_il"],
        "flops": s["flops"],
        "density": s["density"]["overall"],
        "model_density": s["density"]["model"],
        "params": sum(p.numel() for p in run.model.parameters()),
        "train_time_s": s["train_time_s"],
        "wall_time_s": s["wall_time_s"],
        "build_time_s": build_s,
        "steps": s["steps"],
    }


class StepTimer:
    """Times every training step of a ``Trainer`` and every ``engine.step()`` inside it.

    Instrumentation only: it wraps the trainer's per-step method and the engine's ``step`` on the two
    instances (two ``perf_counter`` calls each, the same for dense and sparse runs). ``updated[i]`` is
    whether step i changed a mask (``StepInfo.updated``).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.step_s: list[float] = []
        self.engine_s: list[float] = []
        self.updated: list[bool] = []
        engine = trainer.run.engine
        inner_step, inner_engine = trainer._step, engine.step

        def step(*args: Any) -> None:
            t0 = time.perf_counter()
            inner_step(*args)
            self.step_s.append(time.perf_counter() - t0)

        def engine_step() -> Any:
            t0 = time.perf_counter()
            info = inner_engine()
            self.engine_s.append(time.perf_counter() - t0)
            self.updated.append(bool(info.updated))
            return info

        trainer._step = step
        engine.step = engine_step

    def split(self, times: list[float]) -> tuple[list[float], list[float]]:
        """(times of normal steps, times of mask-update steps)."""
        normal = [t for t, u in zip(times, self.updated, strict=True) if not u]
        update = [t for t, u in zip(times, self.updated, strict=True) if u]
        return normal, update


def timed_fit(overrides: Sequence[str]) -> dict[str, Any]:
    """Train one config with per-step timing (see ``StepTimer``)."""
    run = build_run(make_config(TrainConfig, None, [*QUIET, *overrides]))
    with tempfile.TemporaryDirectory(prefix="bench_sparse_") as out:
        trainer = Trainer(run, Path(out), stream_out=lambda *_: None)
        timer = StepTimer(trainer)
        s = trainer.fit()
    return {"train_time_s": s["train_time_s"], "wall_time_s": s["wall_time_s"], "acc": s["final_avg_acc"]["class_il"],
            "step_s": timer.step_s, "engine_s": timer.engine_s, "updated": timer.updated}


# -- statistics and tables -----------------------------------------------------------------------------
def mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def pm(xs: Sequence[float], digits: int = 2) -> str:
    m, s = mean_std(xs)
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def spread(xs: Sequence[float], fmt: Callable[[float], str] = "{:.3f}".format) -> str:
    """median [min, max]."""
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}, {fmt(max(xs))}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """CPU model, cores, torch build and thread settings of this process."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "python": sys.version.split()[0], "platform": platform.platform(),
            "load_avg_at_start": list(os.getloadavg())}

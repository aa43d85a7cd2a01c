"""Shared helpers of the benchmark scripts: run one configuration in-process, aggregate, print tables.

Benchmarks are not tests: they print markdown tables and write JSON under benchmarks/out/.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable

OUT = Path(__file__).resolve().parent / "out"


def run_config(overrides: list[str]) -> dict[str, Any]:
    """Train one configuration (``key=value`` overrides) through the real engine; return summary.json."""
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.train.build import build_run
    from sparsecl.train.loop import Trainer

    cfg = make_config(TrainConfig, None, ["progress=false", "checkpoint.at_task_end=false",
                                          "checkpoint.keep_model=false", *overrides])
    with tempfile.TemporaryDirectory() as d:
        return Trainer(build_run(cfg), Path(d), stream_out=lambda *a: None).fit()


def run_many(jobs: list[list[str]], workers: int = 1) -> list[dict[str, Any]]:
    """Run configurations, ``workers`` processes at a time (each should set threads=1 then)."""
    if workers <= 1:
        return [run_config(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run_config, jobs))


def bare_sgd_seconds(tasks: list, epochs: int, batch: int, lr: float, momentum: float, seed: int) -> float:
    """A plain PyTorch loop over Fashion-MNIST (MLP 784-256-256-10): for each task (a tensor of training
    indices), ``epochs`` shuffled passes of gather + normalise + forward + backward + SGD step. Returns
    the seconds spent training: the reference the engine's ``train_time_s`` is compared with."""
    import time

    import torch

    from sparsecl.data.registry import load_dataset
    from sparsecl.models import create_model

    torch.set_num_threads(2)
    ds = load_dataset("fashion-mnist")
    model = create_model("mlp", ds.input_shape, 10, hidden=(256, 256), generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    groups = [torch.arange(ds.y_train.numel()) if t is None else t for t in tasks]
    t0 = time.perf_counter()
    for idx_all in groups:
        for _ in range(epochs):
            perm = idx_all[torch.randperm(idx_all.numel(), generator=g)]
            for i in range(0, perm.numel(), batch):
                idx = perm[i:i + batch]
                xb = (ds.x_train[idx].float() / 255.0 - 0.2860) / 0.3530
                loss = torch.nn.functional.cross_entropy(model(xb), ds.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return time.perf_counter() - t0


def mean_std(xs: Iterable[float]) -> tuple[float, float]:
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float, digits: int = 2) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(name: str, obj: Any) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path

"""Where a training step's time goes (profiling, not a benchmark target).

``sparcl``: one full run of the SparCL benchmark protocol (Split Fashion-MNIST, MLP 784-256-256-10, DER++)
with wall-clock timers around the loop's calls (method loss, replay draws, forward, backward, engine step,
every component hook, batch assembly); prints ms per step for each, largest first. The timers wrap the
calls in this process only; they add a few microseconds per call, so compare runs of this script with
each other, not with ``bench_sparcl.py`` times.

``resnet``: ``torch.profiler`` table of the ResNet-18 training step of ``bench_kernels.py --resnet-step``
(CIFAR form, nf 64, batch 32, SparCL's sparse layers at a uniform density, SGD momentum through the mask
engine), 3 profiled steps after 2 warm-up steps.

usage:
  python benchmarks/profile_step.py sparcl --run csr --epochs 5 --threads 1
  python benchmarks/profile_step.py sparcl --run dense --epochs 5 --threads 1
  python benchmarks/profile_step.py resnet --density 0.05 --mode csr --threads 2
  python benchmarks/profile_step.py resnet --density 0.1 --mode csr --threads 2 --no-malloc-reuse

Both apply ``sparsecl.train.memory.keep_freed_memory`` as ``sparsecl train`` does, unless ``--no-malloc-reuse``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench_sparcl import BASE, HOST, sparcl

RUNS = {"dense": [], "masked": [*sparcl(0.05), "sparsity.execution=masked"],
        "csr": [*sparcl(0.05), "sparsity.execution=auto"]}


def _call(f: Any, totals: collections.Counter, key: str, *a: Any, **k: Any) -> Any:
    t = time.perf_counter()
    try:
        return f(*a, **k)
    finally:
        totals[key] += time.perf_counter() - t


def _timed(obj: Any, name: str, key: str, totals: collections.Counter) -> None:
    """Replace ``obj.name`` (on this instance) by a wrapper adding its wall time to ``totals[key]``."""
    setattr(obj, name, functools.partial(_call, getattr(obj, name), totals, key))


def profile_sparcl(args: argparse.Namespace) -> None:
    import sparsecl.train.loop as loop
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.train.build import build_run

    cfg = make_config(TrainConfig, None, ["progress=false", "checkpoint.at_task_end=false",
                                          "checkpoint.keep_model=false", f"threads={args.threads}",
                                          f"seed={args.seed}", *BASE, *HOST["derpp"], f"epochs={args.epochs}",
                                          *RUNS[args.run], f"malloc_reuse={str(not args.no_malloc_reuse).lower()}"])
    run = build_run(cfg)
    totals: collections.Counter = collections.Counter()
    for name, key in (("compute_loss", "loss (forward, replay, terms)"), ("replay", "  replay draws"),
                      ("forward_parts", "  forward")):
        if hasattr(run.method, name):
            _timed(run.method, name, key, totals)
    _timed(run.engine, "step", "engine step (masks, optimizer)", totals)
    for c in run.components:
        for hook in ("before_forward", "before_backward", "after_backward", "after_step"):
            _timed(c, hook, f"{type(c).__name__}.{hook}", totals)
    make_batch = loop.make_batch
    loop.make_batch = functools.partial(_call, make_batch, totals, "batch assembly")
    backward = torch.Tensor.backward  # a method: a plain function keeps ``self`` binding
    torch.Tensor.backward = lambda self, *a, **k: _call(backward, totals, "backward", self, *a, **k)
    try:
        with tempfile.TemporaryDirectory() as d:
            summary = loop.Trainer(run, Path(d), stream_out=lambda *a: None).fit()
    finally:
        loop.make_batch, torch.Tensor.backward = make_batch, backward
    steps = summary["steps"]
    print(f"{args.run}: {1000 * summary['train_time_s'] / steps:.3f} ms per step over {steps} steps "
          f"({args.epochs} epochs, {args.threads} threads, seed {args.seed}); Class-IL "
          f"{summary['final_avg_acc']['class_il']:.2f}\n\n| section | ms per step |\n|---|---|")
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        if 1000 * seconds / steps >= 0.005:
            print(f"| {key} | {1000 * seconds / steps:.3f} |")


def profile_resnet(args: argparse.Namespace) -> None:
    from sparsecl.kernels.execution import SparseExecution
    from sparsecl.models import create_model
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine
    from sparsecl.train.memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    if not args.no_malloc_reuse:
        keep_freed_memory()
    gen = torch.Generator().manual_seed(args.seed)
    x, y = torch.randn(32, 3, 32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    model = create_model("resnet18", (3, 32, 32), 10, nf=64, generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dense = args.density >= 1
    cfg = SparsityConfig(method="dense" if dense else "static", density=args.density, layers="sparcl")
    engine = MaskEngine(model, opt, cfg, 10**6, torch.Generator().manual_seed(args.seed))
    engine.begin()
    execution = SparseExecution(model, engine, args.mode, 32)

    def step() -> None:  # the loop's order of calls (sparsecl.train.loop.Trainer._step)
        execution.before_forward(None, None)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        execution.after_backward(None, None, None)
        engine.step()

    for _ in range(2):
        step()
    with torch.profiler.profile() as prof:
        t = time.perf_counter()
        for _ in range(3):
            step()
        ms = (time.perf_counter() - t) / 3 * 1e3
    print(f"density {args.density}, {args.mode}, {args.threads} threads: {ms:.0f} ms per profiled step; "
          f"layers {execution.paths()}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("sparcl", "resnet"))
    ap.add_argument("--run", choices=tuple(RUNS), default="csr", help="sparcl: dense DER++ or SparCL-DER++ 95 %%")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--density", type=float, default=0.05, help="resnet: density of the sparse layers")
    ap.add_argument("--mode", choices=("masked", "csr", "auto"), default="csr", help="resnet: sparsity.execution")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=25, help="resnet: profiler table rows")
    ap.add_argument("--no-malloc-reuse", action="store_true", help="keep glibc's allocation defaults")
    args = ap.parse_args()
    (profile_sparcl if args.part == "sparcl" else profile_resnet)(args)


if __name__ == "__main__":
    main()

"""Data-parallel training, 1 vs N processes (issue 18): DER++ and SparCL-DER++ on Split Fashion-MNIST.

The anchor protocol of bench_continual/bench_sparcl (5 tasks x 2 classes, MLP 784-256-256-10, SGD lr 0.03,
batch 32 = the GLOBAL batch, replay 32, buffer 500, masked head for SparCL), 1 epoch per task, one seed.
Each configuration runs as ``sparsecl train`` in a fresh process: 1 process with ``threads=T``, or
``nproc=N`` (torch.distributed.run, gloo) with ``threads=T/N`` each, so both use the same cores.
Reported: total wall time of the command (start-up, data loading and the spawn included), training time
(rank 0's ``train_time_s``), time per optimizer step, training examples per second (current + replay,
summed over ranks), final Class-IL accuracy, and whether the N-process run kept the same step count.

usage: python benchmarks/bench_ddp.py [--nproc 1 2] [--threads 2] [--batch 32] [--methods derpp sparcl-derpp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table, write_json

BASE = ["dataset=fashion-mnist", "model=mlp", "hidden=256,256", "stream=class-il", "tasks=5", "lr=0.03",
        "replay_batch_size=32", "buffer_size=500", "epochs=1", "seed=0", "progress=false",
        "checkpoint.at_task_end=false", "checkpoint.keep_model=false", "checkpoint.minutes=0"]
METHODS = {
    "derpp": ["method=derpp", "alpha=0.1", "beta=0.5"],
    "sparcl-derpp": ["method=derpp", "alpha=0.1", "beta=0.5", "masked_head=true", "sparsity.density=0.1",
                     "sparcl.tdm=true", "sparcl.ddr=true", "sparcl.dgm=true", "sparcl.dgm_ratio=0.92"],
}


def run(method: str, nproc: int, threads: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        args = [*BASE, *METHODS[method], f"batch_size={batch}", f"threads={max(threads // nproc, 1)}"]
        if nproc > 1:
            args.append(f"nproc={nproc}")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "sparsecl", "train", *args, "--out", str(out)],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{method} nproc={nproc} failed:\n{p.stderr[-2000:]}")
        s = json.loads((out / "summary.json").read_text())
    return {"method": method, "nproc": nproc, "threads_per_process": max(threads // nproc, 1), "batch": batch,
            "command_wall_s": wall, "train_time_s": s["train_time_s"], "steps": s["steps"],
            "ms_per_step": 1000 * s["train_time_s"] / s["steps"],
            "examples_per_s": s["examples_processed"] / s["train_time_s"],
            "class_il": s["final_avg_acc"]["class_il"], "distributed": s["distributed"], "flops": s["flops"]["train"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="cores in all, shared by the processes")
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args()
    res = [run(m, n, args.threads, b) for b in args.batch for m in args.methods for n in args.nproc]
    rows = []
    for r in res:
        one = next(x for x in res if x["method"] == r["method"] and x["batch"] == r["batch"] and x["nproc"] == 1)
        rows.append([r["method"], r["batch"], r["nproc"], r["threads_per_process"], f"{r['command_wall_s']:.1f}",
                     f"{r['train_time_s']:.1f}", f"{r['ms_per_step']:.2f}", f"{r['examples_per_s']:.0f}",
                     f"{one['train_time_s'] / r['train_time_s']:.2f}x", f"{r['class_il']:.2f}", r["steps"]])
    print(table(["method", "global batch", "processes", "threads each", "command wall s", "train s", "ms/step",
                 "examples/s", "train speed-up", "Class-IL", "steps"], rows))
    name = f"ddp_t{args.threads}_b{'_'.join(map(str, args.batch))}.json"
    path = write_json(name, {"base": BASE, "methods": METHODS, "threads": args.threads, "results": res})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

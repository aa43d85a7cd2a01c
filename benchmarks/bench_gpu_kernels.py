"""GPU sparse inference kernels (issue "real speed", GPU item). Skips cleanly without CUDA.

1. Linear layers, one forward ``y = x W^T`` per shape (out = in, batch B), float16 by default: dense
   ``F.linear`` versus 2:4 semi-structured (``torch.sparse.to_sparse_semi_structured``, 50 % density) and
   versus CSR (``torch.sparse_csr``, cuSPARSE) at densities 0.05 and 0.01; ``torch.utils.benchmark``
   medians (CUDA-synchronised). Each row also says what ``kernels.gpu.choose_gpu_path`` picks, so its
   thresholds can be checked against the GPU at hand.
2. End to end: an MLP 784-2048-2048-10 trained on Fashion-MNIST with 2:4 masks (``sparsity.pattern=n:m``,
   RigL, hidden layers sparse) on the GPU, then evaluated in float16 dense and with its hidden layers on
   the 2:4 kernels (accuracy must agree to float16 rounding).

usage: python benchmarks/bench_gpu_kernels.py [--dtype float16] [--epochs 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import table, write_json
from torch.utils import benchmark

SHAPES = [(1024, 32), (1024, 1024), (4096, 32), (4096, 4096), (8192, 256), (8192, 8192)]  # (out = in, batch)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def median_us(fn, min_run_time: float = 0.3) -> float:
    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e6


def bench_layers(dtype: torch.dtype) -> list[dict]:
    from torch.sparse import to_sparse_semi_structured

    from sparsecl.kernels.gpu import choose_gpu_path, semi_structured_problem

    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for n, batch in SHAPES:
        x = torch.randn(batch, n, device="cuda", dtype=dtype, generator=gen)
        w = torch.randn(n, n, device="cuda", dtype=dtype, generator=gen)
        dense_us = median_us(lambda x=x, w=w: F.linear(x, w))
        keep = torch.rand(n, n // 4, 4, device="cuda", generator=gen).argsort(-1) < 2
        w24 = w * keep.reshape(n, n)
        row = {"n": n, "batch": batch, "dense_us": dense_us}
        problem = semi_structured_problem(w24)
        if problem is None:
            ws = to_sparse_semi_structured(w24)
            torch.testing.assert_close(F.linear(x, ws), F.linear(x, w24), rtol=2e-2, atol=2e-1)
            row["semi_us"] = median_us(lambda x=x, ws=ws: F.linear(x, ws))
        else:
            row["semi_problem"] = problem
        row["auto_24"] = choose_gpu_path(n, n, batch, 0.5, two_four=True)
        for d in (0.05, 0.01):
            wd = w * (torch.rand(n, n, device="cuda", generator=gen) < d)
            try:
                wc = wd.to_sparse_csr()
                row[f"csr_{d}_us"] = median_us(lambda x=x, wc=wc: torch.mm(wc, x.t()))
            except RuntimeError as e:  # a dtype cuSPARSE does not take for this op
                row[f"csr_{d}_problem"] = str(e).splitlines()[0]
            row[f"auto_{d}"] = choose_gpu_path(n, n, batch, d, two_four=False)
        rows.append(row)
    return rows


def speed(row: dict, key: str) -> str:
    return f"{row['dense_us'] / row[key + '_us']:.2f}x" if key + "_us" in row else "n/a"


def end_to_end(dtype: torch.dtype, epochs: int) -> dict:
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.continual.metrics import evaluate
    from sparsecl.export_cli import CastInputs
    from sparsecl.kernels.gpu import sparsify_for_gpu
    from sparsecl.train.build import build_run
    from sparsecl.train.loop import Trainer

    cfg = make_config(TrainConfig, None, [
        "dataset=fashion-mnist", "model=mlp", "hidden=2048,2048", f"epochs={epochs}", "batch_size=256",
        "lr=0.05", "momentum=0.9", "device=cuda", "progress=false", "seed=0", "checkpoint.at_task_end=false",
        "sparsity.method=rigl", "sparsity.pattern=n:m", "sparsity.density=0.5", "eval_batch_size=4096",
        "sparsity.init=dense", "sparsity.lr_scaling=none"])
    run = build_run(cfg)
    with tempfile.TemporaryDirectory() as d:
        summary = Trainer(run, Path(d), stream_out=lambda *a: None).fit()
    stream, transform = run.stream, run.transform
    model = CastInputs(run.model.eval(), dtype)
    last = stream.num_tasks - 1

    def timed_eval() -> tuple[float, float]:
        torch.cuda.synchronize()
        t = benchmark.Timer("f()", globals={"f": lambda: evaluate(model, stream, transform, last, cfg.eval_batch_size)})
        us = t.blocked_autorange(min_run_time=1.0).median * 1e6
        return evaluate(model, stream, transform, last, cfg.eval_batch_size)[0][0], us

    dense_acc, dense_us = timed_eval()
    chosen = sparsify_for_gpu(model, cfg.eval_batch_size, "semi-structured",
                              skip=lambda name, layer: layer.out_features == 10)
    semi_acc, semi_us = timed_eval()
    return {"train_acc_fp32": summary["final_avg_acc"]["class_il"], "dense_acc": dense_acc, "semi_acc": semi_acc,
            "dense_eval_us": dense_us, "semi_eval_us": semi_us, "layers": chosen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float16")
    ap.add_argument("--epochs", type=int, default=1, help="end-to-end MLP training epochs")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU available: the GPU kernel benchmark is skipped")
        return 0
    dtype = DTYPES[args.dtype]
    name = torch.cuda.get_device_name()
    rows = bench_layers(dtype)
    print(f"## {name}, {args.dtype}, one Linear forward (out = in = n, batch B), speed-up over dense F.linear\n")
    print(table(["n", "B", "dense us", "2:4", "auto at 2:4", "csr d=0.05", "auto at 0.05", "csr d=0.01", "auto at 0.01"],
                [[r["n"], r["batch"], f"{r['dense_us']:.1f}", speed(r, "semi"), r["auto_24"], speed(r, "csr_0.05"),
                  r["auto_0.05"], speed(r, "csr_0.01"), r["auto_0.01"]] for r in rows]))
    e2e = end_to_end(dtype, args.epochs)
    print(f"\n## End to end: MLP 784-2048-2048-10, 2:4 RigL, {args.epochs} epoch(s), evaluated in {args.dtype}\n")
    print(table(["eval", "Class-IL", "whole test set (ms)"],
                [["dense kernels", f"{e2e['dense_acc']:.2f}", f"{e2e['dense_eval_us'] / 1e3:.2f}"],
                 ["2:4 semi-structured hidden layers", f"{e2e['semi_acc']:.2f}", f"{e2e['semi_eval_us'] / 1e3:.2f}"]]))
    write_json("gpu_kernels.json", {"device": name, "dtype": args.dtype, "layers": rows, "end_to_end": e2e})
    return 0


if __name__ == "__main__":
    sys.exit(main())

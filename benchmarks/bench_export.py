"""Compression that pays: export sizes and accuracy of a 90 %-sparse model (issue "Real speed and real size").

Trains MLP 784-1000-1000-10 on Fashion-MNIST with RigL (ERK, 90 % sparsity; 3 epochs, SGD lr 0.05 momentum
0.9, batch 128), then writes it as a dense torch.save and as sparse exports (bitmask / indices x fp32 /
fp16 / int8), reloads each and evaluates it on the test split; also post-training dynamic int8
quantisation of the dense-format model (torch.ao dynamic Linear) for comparison.

Then inference time of the whole test split (10,000 images in batches of 1000, ``torch.no_grad``, the
forward passes only: the batches are prepared before timing), 2 threads, ``--rounds`` interleaved
``torch.utils.benchmark`` medians (best kept): the dense fp32 model, the same weights with the sparse
layers on the CSR kernels (``sparsify_by_zeros``, what ``sparsecl eval --kernels auto`` does), and the
dynamic int8 model.

usage: python benchmarks/bench_export.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import table, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing repeats (best median kept)")
    args = ap.parse_args()
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.continual.metrics import evaluate
    from sparsecl.export import load_compressed, quantize_model, save_compressed
    from sparsecl.train.build import build_data, build_model

    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cmd = [sys.executable, "-m", "sparsecl.cli", "train", "dataset=fashion-mnist", "model=mlp", "hidden=1000,1000",
               f"epochs={args.epochs}", "batch_size=128", "lr=0.05", "momentum=0.9", "sparsity.method=rigl",
               "sparsity.density=0.1", "sparsity.distribution=erk", "threads=2", "progress=false",
               "sparsity.init=dense", "sparsity.lr_scaling=none",  # the published figures' settings (pre issue 21 defaults)
               "--out", str(run)]
        subprocess.run(cmd, check=True, capture_output=True)
        import yaml

        cfg = make_config(TrainConfig, yaml.safe_load((run / "config.yaml").read_text()))
        stream, transform = build_data(cfg, torch.device("cpu"))
        state = torch.load(run / "final_model.pt", weights_only=True)

        def accuracy(sd: dict, quant: str | None = None) -> float:
            model = build_model(cfg, stream.dataset, torch.device("cpu"))
            model.load_state_dict(sd)
            if quant:
                model = quantize_model(model, quant)
            return evaluate(model, stream, transform, 0, 1000)[0][0]

        buf = io.BytesIO()
        torch.save(state, buf)
        dense_bytes = buf.getbuffer().nbytes
        base = accuracy(state)
        rows = [["dense torch.save (fp32)", f"{dense_bytes / 1e6:.3f}", "1.0x", f"{base:.2f}", "-", "-"]]
        out = {"dense_bytes": dense_bytes, "accuracy_fp32": base, "exports": {}}
        for fmt in ("bitmask", "indices"):
            for values in ("fp32", "fp16", "int8"):
                f = Path(d) / f"m.{fmt}.{values}.spcl"
                size = save_compressed(state, f, fmt=fmt, values=values)
                sd, _ = load_compressed(f)
                exact = all(torch.equal(sd[k], state[k]) for k in state)
                acc = accuracy(sd)
                rows.append([f"{fmt} + {values}", f"{size / 1e6:.3f}", f"{dense_bytes / size:.1f}x", f"{acc:.2f}",
                             f"{acc - base:+.2f}", "yes" if exact else "no"])
                out["exports"][f"{fmt}/{values}"] = {"bytes": size, "accuracy": acc, "bit_exact": exact}
        q = accuracy(state, "dynamic-int8")
        rows.append(["dynamic int8 (torch.ao, in memory)", "-", "-", f"{q:.2f}", f"{q - base:+.2f}", "-"])
        out["dynamic_int8_accuracy"] = q
        speed_rows, out["inference"] = inference_times(cfg, stream, transform, state, args.rounds)
    print(f"## RigL-ERK 90 % MLP 784-1000-1000-10, Fashion-MNIST, {args.epochs} epochs\n")
    print(table(["checkpoint", "MB", "smaller", "test acc", "vs fp32", "bit-exact reload"], rows))
    print("\n## Inference of the test split (10,000 images, batch 1000, 2 threads, forward passes only)\n")
    print(table(["model", "ms (best of medians)", "faster than dense fp32", "test acc", "layers on CSR"], speed_rows))
    write_json("export.json", out)


def inference_times(cfg, stream, transform, state: dict, rounds: int) -> tuple[list[list[str]], dict]:
    from torch.utils import benchmark

    from sparsecl.data.loader import eval_batches
    from sparsecl.export import quantize_model
    from sparsecl.kernels.convert import sparsify_by_zeros
    from sparsecl.train.build import build_model

    torch.set_num_threads(2)
    task = stream.tasks[0]
    batches = list(eval_batches(stream, task, transform, 1000))

    def built() -> torch.nn.Module:
        model = build_model(cfg, stream.dataset, torch.device("cpu"))
        model.load_state_dict(state)
        return model.eval()

    dense = built()
    csr = built()
    chosen = sparsify_by_zeros(csr, 1000, "auto")
    models = {"dense fp32": dense, "sparse layers on CSR (eval --kernels auto)": csr,
              "dynamic int8 (torch.ao)": quantize_model(built(), "dynamic-int8")}

    def run(model: torch.nn.Module) -> int:
        with torch.no_grad():
            return sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)

    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t = benchmark.Timer("run(m)", globals={"run": run, "m": model}).blocked_autorange(min_run_time=1.0)
            best[name] = min(best[name], t.median * 1e3)
    n = sum(y.numel() for _, y in batches)
    rows, res = [], {}
    for name, model in models.items():
        acc = 100.0 * run(model) / n
        layers = ", ".join(k for k, v in chosen.items() if v == "csr") if "CSR" in name else "-"
        rows.append([name, f"{best[name]:.1f}", f"{best['dense fp32'] / best[name]:.2f}x", f"{acc:.2f}", layers])
        res[name] = {"ms": best[name], "accuracy": acc}
    return rows, {"models": res, "paths": chosen}


if __name__ == "__main__":
    main()

"""Compression that pays: export sizes and accuracy of a 90 %-sparse model (issue "Real speed and real size").

Trains MLP 784-1000-1000-10 on Fashion-MNIST with RigL (ERK, 90 % sparsity; 3 epochs, SGD lr 0.05 momentum
0.9, batch 128), then writes it as a dense torch.save and as sparse exports (bitmask / indices x fp32 /
fp16 / int8), reloads each and evaluates it on the test split; also post-training dynamic int8
quantisation of the dense-format model (torch.ao dynamic Linear) for comparison.

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
               "sparsity.density=0.1", "sparsity.distribution=erk", "threads=2", "progress=false", "--out", str(run)]
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
    print(f"## RigL-ERK 90 % MLP 784-1000-1000-10, Fashion-MNIST, {args.epochs} epochs\n")
    print(table(["checkpoint", "MB", "smaller", "test acc", "vs fp32", "bit-exact reload"], rows))
    write_json("export.json", out)


if __name__ == "__main__":
    main()

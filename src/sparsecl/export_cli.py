"""``sparsecl export`` and ``sparsecl eval``: compressed checkpoints of a run, and their evaluation.

A command, above ``train``: it rebuilds a run's model and data from the run's config through the run
builder (``train.build``, ``train.distill``). The ``export`` package itself (file format, codecs, layouts,
quantisation, low rank) imports nothing of ``train``, so training can read an exported teacher
(``train.distill`` -> ``export.format``) without an import running back up."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch
from torch import nn

from sparsecl.kernels.gpu import GPU_PATH_CHOICES

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CastInputs(nn.Module):
    """Feeds ``inner`` (converted to ``dtype``) inputs of that dtype and returns float32 logits."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).float()


def add_export_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's trained model as a compressed sparse checkpoint")
    p.add_argument("run_dir", help="a finished run folder (holds config.yaml and final_model.pt)")
    p.add_argument("--format", default="bitmask", choices=("bitmask", "indices", "dense"),
                   help="sparse encoding: bitmask (1 bit per weight) or delta indices (default bitmask)")
    p.add_argument("--values", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="value precision; fp32 reloads bit-exactly, int8 is per-channel symmetric")
    p.add_argument("--output", help="output file (default RUN_DIR/model.<format>.<values>.spcl)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="evaluate an exported file (or a run folder) on its test split")
    p.add_argument("path", help="a .spcl file written by `sparsecl export`, or a run folder")
    p.add_argument("--quantize", choices=("none", "dynamic-int8", "weight-int8"), default="none",
                   help="evaluate an int8-quantised copy of the model (CPU)")
    p.add_argument("--data-dir", help="where the dataset files are (default: the run's lookup)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="evaluate in this precision (2:4 kernels need float16 / bfloat16 on most GPUs)")
    p.add_argument("--kernels", choices=("none", *GPU_PATH_CHOICES), default="none",
                   help="sparse inference kernels, per layer: on CPU this project's CSR kernels (auto: where "
                        "the cost model says they pay); on CUDA torch's 2:4 semi-structured / cuSPARSE CSR "
                        "(sparsecl.kernels.gpu; auto picks by pattern, shape and density)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of a table")
    p.set_defaults(func=cmd_eval)


def cmd_export(args: argparse.Namespace) -> int:
    from sparsecl.export.format import save_compressed
    from sparsecl.train.distill import read_run_config, read_run_weights

    run_dir = Path(args.run_dir)
    config, state = read_run_config(run_dir), read_run_weights(run_dir)
    out = Path(args.output) if args.output else run_dir / f"model.{args.format}.{args.values}.spcl"
    size = save_compressed(state, out, fmt=args.format, values=args.values, meta={"config": config})
    buf = io.BytesIO()
    torch.save(state, buf)
    dense = buf.getbuffer().nbytes
    print(f"wrote {out}: {size / 1e6:.3f} MB ({dense / size:.1f}x smaller than the dense torch.save, {dense / 1e6:.3f} MB)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sparsecl.continual.metrics import evaluate
    from sparsecl.export.quantize import quantize_model
    from sparsecl.kernels.convert import sparsify_by_zeros
    from sparsecl.kernels.gpu import sparsify_for_gpu
    from sparsecl.train.build import build_data
    from sparsecl.train.distill import build_trained, read_trained

    if args.quantize != "none" and (args.device != "cpu" or args.kernels != "none" or args.dtype != "float32"):
        raise ValueError("--quantize runs on CPU in float32, without --kernels")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA GPU is available")
    if args.device == "cpu" and args.kernels != "none" and (args.kernels == "semi-structured" or args.dtype != "float32"):
        raise ValueError("on CPU, --kernels runs float32 CSR (2:4 semi-structured needs --device cuda)")
    device = torch.device(args.device)
    cfg, state = read_trained(args.path, [f"data_dir={args.data_dir}"] if args.data_dir else [])
    stream, transform = build_data(cfg, device)
    model: nn.Module = build_trained(cfg, state, stream.dataset, device)
    if args.quantize != "none":
        model = quantize_model(model, args.quantize)
    if args.dtype != "float32":
        model = CastInputs(model, DTYPES[args.dtype])
    kernels: dict[str, str] = {}
    if args.kernels not in ("none", "dense"):
        kernels = (sparsify_for_gpu(model, cfg.eval_batch_size, args.kernels) if device.type == "cuda"
                   else sparsify_by_zeros(model, cfg.eval_batch_size, args.kernels))
    t = time.perf_counter()
    cil, til = evaluate(model, stream, transform, stream.num_tasks - 1, cfg.eval_batch_size)
    seconds = time.perf_counter() - t  # evaluate() ends with a host sync
    result = {"class_il": cil, "task_il": til, "avg_class_il": sum(cil) / len(cil), "avg_task_il": sum(til) / len(til),
              "scenario": stream.scenario, "device": args.device, "dtype": args.dtype, "kernels": kernels,
              "eval_time_s": seconds}
    print(json.dumps(result) if args.json else eval_table(args.path, cfg.dataset, result))
    return 0


def eval_table(path: str, dataset: str, r: dict) -> str:
    """``sparsecl eval``'s table: accuracy (%) per task and on average; Domain-IL has one column."""
    cols = [("Domain-IL", "class_il")] if r["scenario"] == "domain-il" else [("Class-IL", "class_il"),
                                                                               ("Task-IL", "task_il")]
    kernels = ", ".join(f"{k}: {v}" for k, v in r["kernels"].items()) or "none"
    lines = [f"{path}: {dataset}, {len(r['class_il'])} task(s), {r['device']} {r['dtype']}, kernels {kernels}",
             f"{'task':<6}" + "".join(f"{title:>11}" for title, _ in cols)]
    for t in range(len(r["class_il"])):
        lines.append(f"{f'T{t}':<6}" + "".join(f"{r[key][t]:11.2f}" for _, key in cols))
    lines.append(f"{'avg':<6}" + "".join(f"{r['avg_' + key]:11.2f}" for _, key in cols))
    lines.append(f"evaluated in {r['eval_time_s']:.3f} s (--json for JSON)")
    return "\n".join(lines)

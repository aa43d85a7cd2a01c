"""Benchmark: truly sparse (CSR) training steps versus dense and masked-dense steps on CPU.

Default run: MLP 784-1000-1000-10 (the SET/RigL MLP) with both hidden layers sparse and the classifier
dense, batch 32 and 128, densities 0.10/0.05/0.02/0.01, ``torch.set_num_threads(2)``. For each point it
times one full training step (forward + backward + SGD-momentum step) of

  dense        plain nn.Linear layers,
  masked       dense layers whose weights are multiplied by the mask (gradient masked, weight re-masked
               after the step: what every mask-based sparse-training library does),
  csr_native   ``sparsify_model(path="csr", backend="native")``: SparseLinear on the C kernels,
  csr_torch    the same on torch.sparse CSR ops (MKL),

and reports ms/step, speed-up versus dense, and weight + optimizer-state bytes (CSR index bytes apart).
Prints a markdown table and writes ``benchmarks/out/kernels.json``.

``--conv`` times forward + backward of the ResNet-18 CIFAR 3x3 layers (one stride-1 layer per stage and the
three stride-2 ones) at batch 32, dense nn.Conv2d versus SparseConv2d (direct sparse convolution), at
densities 0.10 and 0.05, and writes ``benchmarks/out/kernels_conv.json``.

``--layout`` times the layout moves around the products, native against torch (batch transpose, conv
planes in and out, the training batch gather); writes ``benchmarks/out/kernels_layout.json``.

``--resnet-step`` times a whole training step of CIFAR ResNet-18 (nf = 64, batch 32; forward + backward +
SGD-momentum step through the mask engine) with SparCL's sparse layers at density 0.10 and 0.05: dense,
masked, and ``sparsity.execution=csr`` (what ``sparsecl train`` runs); writes
``benchmarks/out/kernels_resnet_step.json``.

``--fused-step`` times a whole training step of SparCL's MLP 784-256-256-10 (hidden layers sparse,
forward batch 96 = DER++'s current + two replay draws) on the CSR training path with the fused CSR Linear
and with the composed one, next to dense and to the values-only ``SparseLinear`` layers (``--evict-mb N``:
each step on caches another N MB of writes have cooled); writes ``benchmarks/out/kernels_fused.json``.

Every part applies ``sparsecl.train.memory.keep_freed_memory`` first, as ``sparsecl train`` does
(``--no-malloc-reuse``: glibc's allocation defaults).

``--calibrate`` instead times one layer's step (masked versus csr, both backends) over a grid of shapes,
batches, densities and thread counts: the measurements behind ``sparsecl.kernels.paths``' cost models.
It writes ``benchmarks/out/kernels_calibration.json`` and counts the points where ``choose_path`` picks
csr although csr measured slower.

Timing: ``torch.utils.benchmark.Timer.blocked_autorange`` medians; every path is timed ``--rounds``
times, interleaved with the others, and the best median is kept, because the CPU may be shared.
"""

from __future__ import annotations

import argparse
import json
import platform
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

from sparsecl.kernels import SparseConv2d, SparseLinear, choose_path, sparsify_model
from sparsecl.models.mlp import MLP

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

OUT = Path(__file__).resolve().parent / "out"
Step = Callable[[], None]


def random_mask(shape: tuple[int, int], density: float, gen: torch.Generator) -> torch.Tensor:
    """Exactly round(density * numel) True entries, uniformly placed."""
    n = shape[0] * shape[1]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[: round(density * n)]] = True
    return mask.view(shape)


def median_ms(fn: Step, min_run_time: float) -> float:
    fn()  # warm-up (allocations, lazily built kernels)
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e3


def best_of_medians(steps: dict[str, Step], rounds: int, min_run_time: float) -> dict[str, float]:
    """Each step timed ``rounds`` times, interleaved; the best of its medians (robust on a shared CPU)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            times[name].append(median_ms(fn, min_run_time))
    return {name: min(t) for name, t in times.items()}


def make_step(
    model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], masks: dict[str, torch.Tensor] | None = None
) -> tuple[Step, torch.optim.Optimizer]:
    """One SGD-momentum step; with ``masks`` the masked-dense discipline (mask grads, re-mask weights)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = dict(model.named_parameters())
    masked = [(params[n], m) for n, m in (masks or {}).items()]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        for p, m in masked:
            p.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for p, m in masked:
                p.mul_(m)

    return step, opt


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    """(weight + optimizer-state bytes, CSR index bytes) of a model after at least one step."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    opt_state = sum(
        t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)
    )
    index = sum(
        b.numel() * b.element_size() for m in model.modules() if isinstance(m, SparseLinear) for b in m.buffers()
    )
    return weights + opt_state, index


# ---------------------------------------------------------------------------------------------- MLP
MLP_PATHS = ("dense", "masked", "csr_native", "csr_torch")


def bench_mlp(batches: list[int], densities: list[float], min_run_time: float, rounds: int, seed: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Linear's default init uses the global RNG; pinned for this script
    base = MLP(784, (1000, 1000), 10)
    for batch in batches:
        x = torch.randn(batch, 784, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        for density in densities:
            masks = {n: random_mask(tuple(p.shape), density, gen) for n, p in base.named_parameters()
                     if n.startswith("hidden.") and n.endswith(".weight")}
            models = {name: MLP(784, (1000, 1000), 10) for name in MLP_PATHS}
            for m in models.values():
                m.load_state_dict(base.state_dict())
            sparsify_model(models["csr_native"], masks, path="csr", backend="native")
            sparsify_model(models["csr_torch"], masks, path="csr", backend="torch")
            steps, opts = {}, {}
            for name, m in models.items():
                loss = lambda model: F.cross_entropy(model(x), y)  # noqa: E731
                steps[name], opts[name] = make_step(m, loss, masks if name == "masked" else None)
            ms = best_of_medians(steps, rounds, min_run_time)
            row = {"batch": batch, "density": density, "threads": torch.get_num_threads()}
            for name in MLP_PATHS:
                row[f"{name}_ms"] = ms[name]
                row[f"{name}_speedup"] = ms["dense"] / ms[name]
                row[f"{name}_state_bytes"], row[f"{name}_index_bytes"] = state_bytes(models[name], opts[name])
            row["masked_mask_bytes"] = sum(m.numel() for m in masks.values())
            row["auto_paths"] = [choose_path(m.shape[0], m.shape[1], batch, density) for m in masks.values()]
            rows.append(row)
            print(_mlp_line(row), flush=True)
    return rows


MLP_HEADER = (
    "| batch | density | dense ms | masked ms (x) | csr native ms (x) | csr torch ms (x) "
    "| dense MB | csr MB + index MB | auto |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _mlp_line(r: dict) -> str:
    mb = 2.0**20
    cells = [str(r["batch"]), f"{r['density']:.2f}", f"{r['dense_ms']:.2f}"]
    cells += [f"{r[f'{n}_ms']:.2f} ({r[f'{n}_speedup']:.2f}x)" for n in MLP_PATHS[1:]]
    cells += [f"{r['dense_state_bytes'] / mb:.2f}",
              f"{r['csr_native_state_bytes'] / mb:.2f} + {r['csr_native_index_bytes'] / mb:.2f}",
              "/".join(r["auto_paths"])]
    return "| " + " | ".join(cells) + " |"


# ---------------------------------------------------------------------------------------------- calibration
def layer_steps(
    out_f: int, in_f: int, batch: int, density: float, gen: torch.Generator, backend: str
) -> dict[str, Step]:
    """One layer's step (its input needs a gradient, as for any layer but the first): masked and csr."""
    mask = random_mask((out_f, in_f), density, gen)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=gen) / in_f**0.5)
    x = torch.randn(batch, in_f, generator=gen).requires_grad_()
    gy = torch.randn(batch, out_f, generator=gen)

    def loss(module: nn.Module) -> torch.Tensor:
        x.grad = None
        return (module(x) * gy).sum()  # d loss / d y = gy

    masked, _ = make_step(lin, loss, {"weight": mask})
    csr, _ = make_step(SparseLinear.from_dense(lin, mask, backend), loss)
    return {"masked": masked, "csr": csr}


def calibrate(min_run_time: float, rounds: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(256, 256), (1000, 784), (1000, 1000), (2000, 2000)]
    batches = [8, 32, 128, 512]
    densities = [0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
    backends = ("native", "torch")
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for (out_f, in_f), batch, density in ((s, b, d) for s in shapes for b in batches for d in densities):
            row = {"threads": threads, "out": out_f, "in": in_f, "batch": batch, "density": density}
            for backend in backends:
                ms = best_of_medians(layer_steps(out_f, in_f, batch, density, gen, backend), rounds, min_run_time)
                row[f"masked_ms_{backend}"], row[f"csr_ms_{backend}"] = ms["masked"], ms["csr"]
                row[f"choose_path_{backend}"] = choose_path(out_f, in_f, batch, density, threads, backend=backend)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for backend in backends:
        bad = [r for r in rows
               if r[f"choose_path_{backend}"] == "csr" and r[f"csr_ms_{backend}"] > r[f"masked_ms_{backend}"]]
        print(f"{backend}: choose_path picked csr where csr measured slower at {len(bad)} of {len(rows)} points")
    return rows


# ---------------------------------------------------------------------------------------------- convolution
# (in channels, out channels, input side, stride): the stride-1 3x3 layer of each ResNet-18 CIFAR stage, then
# the stride-2 3x3 convs that open stages 2-4
RESNET18_CIFAR_3X3 = ((64, 64, 32, 1), (128, 128, 16, 1), (256, 256, 8, 1), (512, 512, 4, 1),
                      (64, 128, 32, 2), (128, 256, 16, 2), (256, 512, 8, 2))


def bench_conv(batch: int, densities: list[float], min_run_time: float, rounds: int, seed: int) -> list[dict]:
    """The 3x3 layers of ResNet-18 CIFAR (one stride-1 layer per stage, the three stride-2 ones): forward +
    backward (input and weight gradients), dense nn.Conv2d versus SparseConv2d (native direct sparse
    convolution)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for c_in, c_out, side, stride in RESNET18_CIFAR_3X3:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (9 * c_in) ** 0.5)
        x = torch.randn(batch, c_in, side, side, generator=gen).requires_grad_()
        gy = torch.randn(batch, c_out, side // stride, side // stride, generator=gen)

        def step(module: nn.Module) -> Step:
            def run() -> None:
                x.grad = None
                for p in module.parameters():
                    p.grad = None
                module(x).backward(gy)
            return run

        for density in densities:
            mask = torch.rand(conv.weight.shape, generator=gen) < density
            sparse = SparseConv2d.from_dense(conv, mask, backend="native")
            ms = best_of_medians({"dense": step(conv), "csr": step(sparse)}, rounds, min_run_time)
            rows.append({"in_channels": c_in, "out_channels": c_out, "side": side, "stride": stride, "batch": batch,
                         "density": density, "threads": torch.get_num_threads(), "dense_ms": ms["dense"],
                         "csr_ms": ms["csr"], "speedup": ms["dense"] / ms["csr"]})
            print(f"| {c_in}->{c_out} | {side}x{side} | {stride} | {density:.2f} | {ms['dense']:.2f} | {ms['csr']:.2f} "
                  f"| {ms['dense'] / ms['csr']:.2f} |", flush=True)
    return rows


def bench_resnet_step(batch: int, densities: list[float], min_run_time: float, rounds: int, seed: int) -> list[dict]:
    """Whole training step (forward + backward + SGD-momentum step through the mask engine) of CIFAR
    ResNet-18 (nf = 64, 32x32 input), SparCL's layer choice (the 3x3 convs inside residual blocks sparse,
    uniform density): dense model, masked path, and the training path of ``sparsity.execution=csr``
    (every sparse 3x3 conv on the direct sparse kernel, stride 2 included)."""
    from sparsecl.kernels.execution import SparseExecution
    from sparsecl.models import create_model
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def build(density: float, mode: str) -> tuple[Step, dict[str, str]]:
        model = create_model("resnet18", (3, 32, 32), 10, nf=64, generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        cfg = SparsityConfig(method="static" if density < 1 else "dense", density=density, layers="sparcl")
        engine = MaskEngine(model, opt, cfg, 10**6, torch.Generator().manual_seed(seed))
        engine.begin()
        execution = SparseExecution(model, engine, mode, batch)

        def step() -> None:  # the loop's order of calls (sparsecl.train.loop.Trainer._step)
            execution.before_forward(None, None)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            execution.after_backward(None, None, None)
            engine.step()
        return step, execution.paths()

    dense_step, _ = build(1.0, "masked")
    rows = []
    for density in densities:
        masked_step, _ = build(density, "masked")
        csr_step, paths = build(density, "csr")
        ms = best_of_medians({"dense": dense_step, "masked": masked_step, "csr": csr_step}, rounds, min_run_time)
        n_csr = sum(p == "csr" for p in paths.values())
        rows.append({"batch": batch, "density": density, "threads": torch.get_num_threads(), **{f"{k}_ms": v for k, v in ms.items()},
                     "speedup_vs_dense": ms["dense"] / ms["csr"], "speedup_vs_masked": ms["masked"] / ms["csr"],
                     "csr_layers": n_csr, "sparse_layers": len(paths)})
        print(f"| {density:.2f} | {ms['dense']:.0f} | {ms['masked']:.0f} | {ms['csr']:.0f} | "
              f"{ms['dense'] / ms['csr']:.2f}x | {ms['masked'] / ms['csr']:.2f}x | {n_csr} of {len(paths)} |", flush=True)
    return rows


def bench_fused_step(batch: int, densities: list[float], min_run_time: float, rounds: int, seed: int,
                     evict_mb: int = 0) -> list[dict]:
    """Whole training step (forward + backward + SGD step through the mask engine) of the SparCL MLP
    784-256-256-10 (hidden layers sparse, classifier dense) at a DER++ forward batch: the CSR training path
    with ``FusedCsrLinear`` versus the same path composed of ``GatherActive`` + ``SparseLinearFunction``
    (same native kernels; the difference is per-call Python), next to dense, and next to the values-only
    layers of ``sparsify_model`` (``SparseLinear``: weight and SGD state only at the active positions, no
    dense tensor touched), which shows what the dense backing of the training path costs.

    ``evict_mb`` > 0: every step first writes that many MB of an unrelated buffer, as the rest of a real
    training step (data gather, replay buffer, SparCL's state) does, so the step runs on colder caches; the
    time of the write alone is measured in the same rounds and subtracted."""
    from sparsecl.kernels.execution import SparseExecution
    from sparsecl.models import create_model
    from sparsecl.sparse.config import SparsityConfig
    from sparsecl.sparse.engine import MaskEngine

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    junk = torch.zeros(evict_mb * 2**20 // 4)

    def evict() -> None:
        if evict_mb:
            junk.add_(1.0)

    def build(density: float, mode: str, fused: bool = True) -> Step:
        model = create_model("mlp", (1, 28, 28), 10, hidden=(256, 256), generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=0.03)
        cfg = SparsityConfig(method="static" if density < 1 else "dense", density=density, layers="sparcl")
        engine = MaskEngine(model, opt, cfg, 10**6, torch.Generator().manual_seed(seed))
        engine.begin()
        if mode == "values":
            sparsify_model(model, dict(engine.masks), path="csr")
            opt = torch.optim.SGD(model.parameters(), lr=0.03)

            def values_step() -> None:
                evict()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
            return values_step
        execution = SparseExecution(model, engine, mode, batch)
        for plan in execution.plans.values():
            plan.fused = plan.fused and fused

        def step() -> None:
            evict()
            execution.before_forward(None, None)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            execution.after_backward(None, None, None)
            engine.step()
        return step

    dense_step = build(1.0, "masked")
    rows = []
    for density in densities:
        steps = {"dense": dense_step, "composed": build(density, "csr", False), "fused": build(density, "csr"),
                 "values": build(density, "values")}
        if evict_mb:
            steps["evict"] = evict
        ms = best_of_medians(steps, rounds, min_run_time)
        base = ms.pop("evict", 0.0)
        ms = {k: v - base for k, v in ms.items()}
        rows.append({"batch": batch, "density": density, "threads": torch.get_num_threads(), "evict_mb": evict_mb,
                     "evict_ms": base, **{f"{k}_ms": v for k, v in ms.items()},
                     "fused_saves_ms": ms["composed"] - ms["fused"]})
        print(f"| {density:.2f} | {ms['dense']:.3f} | {ms['composed']:.3f} | {ms['fused']:.3f} | {ms['values']:.3f} | "
              f"{ms['dense'] / ms['fused']:.2f}x | {ms['composed'] - ms['fused']:.3f} |", flush=True)
    return rows


def bench_layout(min_run_time: float, rounds: int, seed: int) -> list[dict]:
    """The layout moves around the sparse products, native against what torch does otherwise: the
    batch transpose of the SparCL MLP's activations, the padded batch-innermost planes of a ResNet-18
    conv input and back, and the training batch gather (``index_select`` against advanced indexing)."""
    from sparsecl.kernels.native import native_kernels

    k = native_kernels()
    if k is None:
        raise SystemExit("native kernels unavailable: nothing to compare")
    gen = torch.Generator().manual_seed(seed)
    rows = []

    def row(op: str, shape: str, torch_fn: Step, native_fn: Step) -> None:
        ms = best_of_medians({"torch": torch_fn, "native": native_fn}, rounds, min_run_time)
        rows.append({"op": op, "shape": shape, "torch_us": 1e3 * ms["torch"], "native_us": 1e3 * ms["native"],
                     "speedup": ms["torch"] / ms["native"]})
        print(f"| {op} | {shape} | {1e3 * ms['torch']:.1f} | {1e3 * ms['native']:.1f} | "
              f"{ms['torch'] / ms['native']:.2f}x |", flush=True)

    for b, f in ((96, 784), (96, 256), (256, 96)):
        a = torch.randn(b, f, generator=gen)
        row("transpose", f"{b}x{f}", lambda a=a: a.t().contiguous(), lambda a=a: k.transpose(a))
    for c, side in ((64, 32), (128, 16), (512, 4)):
        x = torch.randn(32, c, side, side, generator=gen)
        out = k.to_planes(x, (0, 0), 32)  # a conv output: [C, H, W, Np], read back whole

        def torch_planes(x: torch.Tensor = x) -> torch.Tensor:
            out = x.new_zeros(x.shape[1], x.shape[2] + 2, x.shape[3] + 2, 32)
            out[:, 1:-1, 1:-1, : x.shape[0]] = x.permute(1, 2, 3, 0)
            return out
        row("to_planes", f"32x{c}x{side}x{side} pad 1", torch_planes, lambda x=x: k.to_planes(x, (1, 1), 32))
        row("from_planes", f"{c}x{side}x{side}x32 -> 32x{c}x{side}x{side}",
            lambda o=out: o.permute(3, 0, 1, 2).contiguous(), lambda o=out: k.from_planes(o, 32))
    data = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8, generator=gen)
    idx = torch.randperm(60000, generator=gen)[:32]
    row("batch gather (uint8 images)", "32 of 60000 x 1x28x28", lambda: data[idx], lambda: data.index_select(0, idx))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--densities", type=float, nargs="+", default=None,
                    help="default: 0.10 0.05 0.02 0.01 (MLP), 0.10 0.05 (--conv, --resnet-step, --fused-step)")
    ap.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timed median")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the best median is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", action="store_true", help="time the per-layer grid behind choose_path")
    ap.add_argument("--conv", action="store_true", help="ResNet-18 CIFAR 3x3 layers, batch 32: dense vs sparse")
    ap.add_argument("--resnet-step", action="store_true",
                    help="ResNet-18 whole training step, batch 32: dense vs masked vs CSR execution")
    ap.add_argument("--fused-step", action="store_true",
                    help="SparCL MLP training step, forward batch 96: fused vs composed CSR Linear vs dense")
    ap.add_argument("--evict-mb", type=int, default=0,
                    help="--fused-step: write this many MB elsewhere before every step (colder caches)")
    ap.add_argument("--layout", action="store_true",
                    help="layout moves (transpose, conv planes, batch gather): native vs torch")
    ap.add_argument("--no-malloc-reuse", action="store_true", help="keep glibc's allocation defaults")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.no_malloc_reuse:
        from sparsecl.train.memory import keep_freed_memory

        keep_freed_memory()
    meta = {"torch": torch.__version__, "machine": platform.machine(), "mkl": torch.backends.mkl.is_available(),
            "malloc_reuse": not args.no_malloc_reuse,
            "seed": args.seed, "rounds": args.rounds, "min_run_time": args.min_run_time}
    if args.resnet_step:
        torch.set_num_threads(args.threads)
        print("| density | dense ms | masked ms | csr ms | csr vs dense | csr vs masked | layers on csr |\n"
              "|---|---|---|---|---|---|---|")
        rows = bench_resnet_step(32, args.densities or [0.10, 0.05], max(args.min_run_time, 2.0), args.rounds, args.seed)
        out = args.out or OUT / "kernels_resnet_step.json"
    elif args.fused_step:
        torch.set_num_threads(args.threads)
        if args.evict_mb:
            print(f"(each step first writes {args.evict_mb} MB elsewhere; that write's own time is subtracted)")
        print("| density | dense ms | composed csr ms | fused csr ms | values-only csr ms | dense / fused | fused saves ms |\n"
              "|---|---|---|---|---|---|---|")
        rows = bench_fused_step(96, args.densities or [0.10, 0.05], args.min_run_time, args.rounds, args.seed,
                                args.evict_mb)
        out = args.out or OUT / "kernels_fused.json"
    elif args.conv:
        torch.set_num_threads(args.threads)
        print("| channels | input map | stride | density | dense ms | csr ms | speed-up |\n|---|---|---|---|---|---|---|")
        rows = bench_conv(32, args.densities or [0.10, 0.05], args.min_run_time, args.rounds, args.seed)
        out = args.out or OUT / "kernels_conv.json"
    elif args.layout:
        torch.set_num_threads(args.threads)
        print("| op | shape | torch us | native us | speed-up |\n|---|---|---|---|---|")
        rows = bench_layout(args.min_run_time, args.rounds, args.seed)
        out = args.out or OUT / "kernels_layout.json"
    elif args.calibrate:
        rows = calibrate(args.min_run_time, args.rounds, args.seed)
        out = args.out or OUT / "kernels_calibration.json"
    else:
        torch.set_num_threads(args.threads)
        print(MLP_HEADER)
        rows = bench_mlp(args.batches, args.densities or [0.10, 0.05, 0.02, 0.01], args.min_run_time, args.rounds, args.seed)
        out = args.out or OUT / "kernels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

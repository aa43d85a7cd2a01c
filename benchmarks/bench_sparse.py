"""Benchmark: the sparse-training engine on single-task Fashion-MNIST (issue "Sparse training engine").

Part 1, accuracy grid. LeNet-300-100 (``model=mlp hidden=300,100``) and the small CNN (``model=cnn``),
every sparse method of the engine at 80 / 90 / 95 % sparsity (density 0.2 / 0.1 / 0.05), several seeds:
test accuracy (mean ± sample std over seeds), training and inference FLOPs as a fraction of the dense
baseline's (RigL appendix convention, counted by the run's own ``FlopsMeter``), and time. Baselines: Dense
and Small-Dense (same parameter count; the library builds it for the MLP only). The RigL family and every
other method use the ERK distribution; RigL with the uniform distribution is a comparison row. Each grid
point is one ``sparsecl train`` equivalent run in a worker process (``--jobs`` at a time, ``threads=1``).

Part 2, engine overhead, in ONE process with interleaved repeats (dense, RigL, RigL, dense, ...):
training time (the loop's ``train_time_s``, evaluation excluded) of RigL (ERK 90 %, delta_t = 100) over
dense on LeNet-300-100 and 784-1000-1000-10, and the cost of one mask update in normal steps: every
training step and every ``engine.step()`` is timed; an update step is one whose ``StepInfo.updated`` is
set; cost = (median update step - median normal step) / median normal step.

Targets (reported PASS/FAIL, never enforced): RigL-ERK at 90 % within 1.0 point of dense, at 95 % within
2.0 points; RigL >= SET >= Static (mean accuracy, per model and sparsity); RigL / dense training time
<= 1.05x; one mask update <= 3 normal steps.

Outputs: markdown tables on stdout, ``benchmarks/out/sparse.json`` and ``benchmarks/RESULTS_sparse.md``.
Every finished grid run is also appended to ``benchmarks/out/sparse_runs.jsonl``; ``--reuse`` takes runs of
an identical config (same override list) from there instead of training them again.

    python benchmarks/bench_sparse.py --jobs 2                  # the full benchmark
    python benchmarks/bench_sparse.py --quick                   # smoke test on sklearn digits, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shlex
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparse_common import (
    machine,
    markdown_table,
    mean_std,
    pm,
    spread,
    timed_fit,
    train_one,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

MODELS = {"mlp": ("LeNet-300-100", ["model=mlp", "hidden=300,100"]), "cnn": ("small CNN", ["model=cnn"])}
OVERHEAD_MODELS = {"LeNet-300-100": ["model=mlp", "hidden=300,100"],
                   "784-1000-1000-10": ["model=mlp", "hidden=1000,1000"]}
# (method, distribution) rows; dense runs once at density 1. small_dense narrows mlp (hidden) and cnn (nf).
SPARSE_ROWS = [(m, "erk") for m in ("static", "magnitude", "snip", "set", "snfs", "rigl", "gmp", "lth")]
SMALL_DENSE_MODELS = ("mlp", "cnn")
DENSITIES = (0.2, 0.1, 0.05)

# The recipe of every grid run (``sparsity.*`` defaults of the library are the RigL paper's:
# delta_t = 100, T_end = 0.75, alpha = 0.3 with cosine decay).
RECIPE = ["optimizer=sgd", "lr=0.05", "momentum=0.9", "weight_decay=0.0001", "lr_schedule=cosine",
          "batch_size=128", "threads=1", "eval_batch_size=1000", "sparsity.delta_t=100",
          # the settings of the published figures (before issue 21 made init=rescale, lr_scaling=auto the defaults)
          "sparsity.init=dense", "sparsity.lr_scaling=none"]
QUICK = {"dataset": "dataset=digits", "delta_t": "sparsity.delta_t=4"}
_MX = re.compile(r"^(?P<base>[a-z_]+)_(?P<m>\d+)x$")


def split_method(method: str) -> tuple[str, int]:
    """``rigl_2x`` -> ("rigl", 2): RigL's "Mx" rows train M times longer (``sparsity.multiplier``)."""
    m = _MX.match(method)
    return (m["base"], int(m["m"])) if m else (method, 1)


@dataclass(frozen=True)
class Point:
    """One grid run."""

    model: str
    method: str
    distribution: str  # "-" for dense
    density: float
    seed: int
    epochs: int
    lth_rounds: int  # sparsity.lth_rounds (used by lth rows only)
    extra: tuple[str, ...] = ()  # --set overrides of the sparse rows (e.g. sparsity.init=rescale)

    def overrides(self, recipe: list[str]) -> list[str]:
        base, mult = split_method(self.method)
        out = [*MODELS[self.model][1], *recipe, f"epochs={self.epochs}", f"seed={self.seed}",
               f"sparsity.method={base}"]
        if mult != 1:
            out.append(f"sparsity.multiplier={mult}")
        if self.method != "dense":
            out += [f"sparsity.density={self.density}", f"sparsity.distribution={self.distribution}", *self.extra]
        if self.method == "lth":
            out.append(f"sparsity.lth_rounds={self.lth_rounds}")
        return out

    def cost(self) -> float:
        """Rough relative cost, to start the longest runs first."""
        return ((40.0 if self.model == "cnn" else 1.0) * self.epochs * split_method(self.method)[1]
                * (self.lth_rounds + 1 if self.method == "lth" else 1))


def per_model(text: str, models: list[str], cast: type) -> dict[str, Any]:
    """``5`` (every model) or ``mlp=5,cnn=1``."""
    if "=" not in text:
        return {m: cast(text) for m in models}
    given = dict(kv.split("=", 1) for kv in text.split(","))
    missing = [m for m in models if m not in given]
    if missing:
        raise SystemExit(f"no value for model(s) {', '.join(missing)} in {text!r}")
    return {m: cast(given[m]) for m in models}


def grid(models: list[str], seeds: dict[str, int], epochs: dict[str, int], methods: list[str],
         densities: list[float], uniform: list[str], lth_rounds: dict[str, int],
         extra: tuple[str, ...] = ()) -> list[Point]:
    pts: list[Point] = []
    for model in models:
        rows = [r for r in SPARSE_ROWS if r[0] in methods]
        rows += [(m, "erk") for m in methods if split_method(m)[1] != 1]  # Mx rows: ERK
        if model in uniform and "rigl" in methods:
            rows.append(("rigl", "uniform"))
        if "small_dense" in methods and model in SMALL_DENSE_MODELS:
            rows.insert(0, ("small_dense", "erk"))
        for seed in range(seeds[model]):
            pts.append(Point(model, "dense", "-", 1.0, seed, epochs[model], lth_rounds[model]))
            pts += [Point(model, m, d, rho, seed, epochs[model], lth_rounds[model], extra)
                    for m, d in rows for rho in densities]
    return pts


# -- part 1: the grid ------------------------------------------------------------------------------------
def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Finished runs by key (their override list), from the JSON-lines cache."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in records}


def run_grid(points: list[Point], recipe: list[str], jobs: int, cache_path: Path | None,
             reuse: bool, command: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every point (``jobs`` worker processes): (records of finished runs, failed runs with the error)."""
    cache = load_cache(cache_path) if (reuse and cache_path) else {}
    records, failed, todo = [], [], []
    for p in points:
        key = " ".join(p.overrides(recipe))
        if key in cache:
            records.append(cache[key])
        else:
            todo.append((p, key))
    print(f"grid: {len(points)} runs, {len(points) - len(todo)} reused, {len(todo)} to train with {jobs} job(s)", flush=True)
    todo.sort(key=lambda pk: -pk[0].cost())
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        pending = {pool.submit(train_one, key.split(" ")): (p, key) for p, key in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                p, key = pending.pop(fut)
                head = f"  [{len(records) + len(failed) + 1:3d}/{len(points)} {time.perf_counter() - t0:6.0f}s] " \
                       f"{p.model} {p.method} {p.distribution} d={p.density} seed={p.seed}:"
                try:
                    rec = {"key": key, "point": asdict(p), "produced_by": command, **fut.result()}
                except Exception as e:  # noqa: BLE001 - a failed run is reported, the grid goes on
                    failed.append({"key": key, "point": asdict(p), "error": f"{type(e).__name__}: {e}"})
                    print(f"{head} FAILED {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
                    continue
                records.append(rec)
                if cache_path is not None:
                    with cache_path.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                print(f"{head} acc {rec['acc']:.2f} train {rec['train_time_s']:.1f}s", flush=True)
    return records, failed


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, method, distribution, density): accuracy and cost over seeds."""
    dense_flops = {}
    for r in records:
        p = r["point"]
        if p["method"] == "dense":  # every dense run of a model trains the same examples: same FLOPs
            dense_flops[p["model"]] = (r["flops"]["train"], r["flops"]["inference_dense"])
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        p = r["point"]
        groups[(p["model"], p["method"], p["distribution"], p["density"])].append(r)
    rows = []
    for (model, method, dist, density), rs in groups.items():
        if model not in dense_flops:
            continue  # no dense reference (its runs failed): reported under failed runs
        train_d, inf_d = dense_flops[model]
        acc = [r["acc"] for r in rs]
        rows.append({
            "model": model, "method": method, "distribution": dist, "density": density,
            "sparsity_pct": round(100 * (1 - density)), "seeds": sorted(r["point"]["seed"] for r in rs),
            "epochs": rs[0]["point"]["epochs"], "acc": acc, "acc_mean": mean_std(acc)[0], "acc_std": mean_std(acc)[1],
            "measured_density": statistics.fmean(r["density"] for r in rs),
            "params": rs[0]["params"], "model_density": statistics.fmean(r["model_density"] for r in rs),
            "train_flops_x": statistics.fmean(r["flops"]["train"] for r in rs) / train_d,
            "inference_flops_x": statistics.fmean(r["flops"]["inference"] for r in rs) / inf_d,
            "train_time_s": statistics.fmean(r["train_time_s"] for r in rs),
            "wall_time_s": statistics.fmean(r["wall_time_s"] for r in rs),
        })
    order = {m: i for i, m in enumerate(["dense", "small_dense", *dict.fromkeys(m for m, _ in SPARSE_ROWS)])}
    rows.sort(key=lambda r: (list(MODELS).index(r["model"]), order[split_method(r["method"])[0]],
                             split_method(r["method"])[1], r["distribution"] != "erk", -r["density"]))
    return rows


def find(rows: list[dict[str, Any]], model: str, method: str, dist: str, density: float) -> dict[str, Any] | None:
    return next((r for r in rows if (r["model"], r["method"], r["distribution"]) == (model, method, dist)
                 and abs(r["density"] - density) < 1e-12), None)


def accuracy_targets(rows: list[dict[str, Any]], densities: list[float]) -> list[dict[str, Any]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        dense = find(rows, model, "dense", "-", 1.0)
        rigls = sorted({r["method"] for r in rows if split_method(r["method"])[0] == "rigl"}, key=lambda m: split_method(m)[1])
        for method in rigls:  # RigL_Mx (M times the steps) against dense at 1x: the RigL paper's comparison
            name = "RigL" + ("" if method == "rigl" else method[4:])
            for density, tol in ((0.1, 1.0), (0.05, 2.0)):
                rigl = find(rows, model, method, "erk", density)
                if dense and rigl:
                    gap = dense["acc_mean"] - rigl["acc_mean"]
                    out.append({"model": model, "target": f"{name}-ERK {round(100 * (1 - density))} % within {tol} of dense",
                                "value": f"{rigl['acc_mean']:.2f} vs {dense['acc_mean']:.2f} (gap {gap:+.2f}; "
                                         f"train FLOPs {rigl['train_flops_x']:.2f}x)", "pass": gap <= tol})
        for density in densities:
            rs = [find(rows, model, m, "erk", density) for m in ("rigl", "set", "static")]
            if all(rs):
                a = [r["acc_mean"] for r in rs]
                out.append({"model": model, "target": f"RigL >= SET >= Static at {round(100 * (1 - density))} %",
                            "value": " / ".join(f"{x:.2f}" for x in a), "pass": a[0] >= a[1] >= a[2]})
    return out


# -- part 2: engine overhead -----------------------------------------------------------------------------
def run_overhead(models: dict[str, list[str]], recipe: list[str], repeats: int, epochs: int) -> dict[str, Any]:
    """Dense vs RigL-ERK-90 % training time, interleaved (even repeats dense first, odd RigL first). RigL
    runs on the masked path (``sparsity.execution=masked``): this measures the engine's own overhead, not
    the CSR kernels' speed-up."""
    kinds = {"dense": ["sparsity.method=dense"],
             "rigl": ["sparsity.method=rigl", "sparsity.density=0.1", "sparsity.distribution=erk",
                      "sparsity.execution=masked"]}
    out = {}
    for name, model in models.items():
        runs: dict[str, list[dict[str, Any]]] = {"dense": [], "rigl": []}
        for r in range(repeats):
            for kind in (("dense", "rigl") if r % 2 == 0 else ("rigl", "dense")):
                res = timed_fit([*model, *recipe, f"epochs={epochs}", "seed=0", *kinds[kind]])
                runs[kind].append(res)
                print(f"  overhead {name} repeat {r} {kind}: train {res['train_time_s']:.2f}s "
                      f"({sum(res['updated'])} update steps)", flush=True)
        out[name] = summarize_overhead(runs)
    return out


def summarize_overhead(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = statistics.median
    dense_t = [r["train_time_s"] for r in runs["dense"]]
    rigl_t = [r["train_time_s"] for r in runs["rigl"]]
    ratios = [s / d for s, d in zip(rigl_t, dense_t, strict=True)]  # paired by repeat
    per_repeat = []
    for r in runs["rigl"]:
        steps = list(zip(r["step_s"], r["engine_s"], r["updated"], strict=True))
        normal = [s for s, _, u in steps if not u]
        update = [s for s, _, u in steps if u]
        e_normal = [e for _, e, u in steps if not u]
        e_update = [e for _, e, u in steps if u]
        if not update:
            continue
        n = med(normal)
        per_repeat.append({"normal_step_s": n, "update_step_s": med(update),
                           "update_cost_steps": (med(update) - n) / n,
                           "update_step_in_steps": med(update) / n,
                           "engine_normal_s": med(e_normal), "engine_update_s": med(e_update),
                           "engine_update_cost_steps": (med(e_update) - med(e_normal)) / n,
                           "n_updates": len(update), "n_steps": len(steps)})
    dense_step = [med(r["step_s"]) for r in runs["dense"]]
    return {
        "repeats": len(ratios), "dense_train_s": dense_t, "rigl_train_s": rigl_t, "ratio_per_repeat": ratios,
        "ratio_median": med(ratios), "ratio_of_medians": med(rigl_t) / med(dense_t),
        "dense_step_s_median": med(dense_step),
        "rigl_normal_step_s_median": med([p["normal_step_s"] for p in per_repeat]) if per_repeat else None,
        "update": per_repeat,
        "update_cost_steps_median": med([p["update_cost_steps"] for p in per_repeat]) if per_repeat else None,
        "acc": {"dense": runs["dense"][0]["acc"], "rigl": runs["rigl"][0]["acc"]},
    }


# -- report ----------------------------------------------------------------------------------------------
def fmt_x(x: float) -> str:
    return f"{x:.3f}x"


def grid_tables(rows: list[dict[str, Any]], densities: list[float]) -> str:
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model]
        dense = find(rows, model, "dense", "-", 1.0)
        seeds, epochs = len(dense["seeds"]), dense["epochs"]
        parts.append(f"### {MODELS[model][0]} (`{' '.join(MODELS[model][1])}`), {epochs} epoch(s), "
                     f"{seeds} seed(s)\n\nTest accuracy (%), mean ± sample std over seeds:\n")
        pivot = [["dense", "-", *([pm(dense["acc"])] * len(densities))]]
        for method, dist in dict.fromkeys((r["method"], r["distribution"]) for r in mrows if r["method"] != "dense"):
            cells = [find(rows, model, method, dist, d) for d in densities]
            pivot.append([method, dist, *(pm(c["acc"]) if c else "-" for c in cells)])
        parts.append(markdown_table(["method", "distribution", *(f"{round(100 * (1 - d))} %" for d in densities)], pivot))
        parts.append("\nCost (FLOPs as a fraction of the dense run's; times are means over seeds, measured "
                     "while other runs shared the CPU, so compare them only loosely):\n")
        detail = [[r["method"], r["distribution"], f"{r['sparsity_pct']} %", f"{r['measured_density']:.4f}",
                   f"{r['params']:,}", pm(r["acc"]), f"{r['acc_mean'] - dense['acc_mean']:+.2f}",
                   fmt_x(r["train_flops_x"]), fmt_x(r["inference_flops_x"]), f"{r['train_time_s']:.1f}",
                   f"{r['wall_time_s']:.1f}"] for r in mrows]
        parts.append(markdown_table(["method", "dist", "sparsity", "density (sparse layers)", "params (model)",
                                     "acc (%)", "vs dense", "train FLOPs", "inference FLOPs", "train time (s)",
                                     "wall (s)"], detail))
        parts.append("")
    return "\n".join(parts)


def overhead_tables(ov: dict[str, Any]) -> str:
    ms = "{:.2f}".format
    rows, urows = [], []
    for name, o in ov.items():
        rows.append([name, o["repeats"], spread([t for t in o["dense_train_s"]], ms), spread(o["rigl_train_s"], ms),
                     spread(o["ratio_per_repeat"]), f"{o['ratio_of_medians']:.3f}",
                     f"{1e3 * o['dense_step_s_median']:.2f}",
                     f"{1e3 * o['rigl_normal_step_s_median']:.2f}" if o["rigl_normal_step_s_median"] else "-"])
        u = o["update"]
        if u:
            urows.append([name, sum(p["n_updates"] for p in u), spread([1e3 * p["normal_step_s"] for p in u], ms),
                          spread([1e3 * p["update_step_s"] for p in u], ms),
                          spread([p["update_cost_steps"] for p in u], "{:.2f}".format),
                          spread([p["engine_update_cost_steps"] for p in u], "{:.2f}".format),
                          spread([p["update_step_in_steps"] for p in u], "{:.2f}".format)])
    return "\n".join([
        "Training time (loop's train_time_s, evaluation excluded), median [min, max] over repeats:\n",
        markdown_table(["model", "repeats", "dense (s)", "RigL (s)", "RigL / dense (paired)",
                        "ratio of medians", "dense step (ms)", "RigL normal step (ms)"], rows),
        "\nOne mask update (RigL ERK 90 %), per repeat medians, then median [min, max] over repeats:\n",
        markdown_table(["model", "updates timed", "normal step (ms)", "update step (ms)",
                        "update cost (normal steps)", "engine.step() extra (normal steps)",
                        "update step / normal step"], urows),
    ])


def overhead_targets(ov: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, o in ov.items():
        out.append({"model": name, "target": "RigL / dense training time <= 1.05x",
                    "value": f"{o['ratio_median']:.3f}x (paired median; range {min(o['ratio_per_repeat']):.3f}-"
                             f"{max(o['ratio_per_repeat']):.3f})", "pass": o["ratio_median"] <= 1.05})
        if o["update_cost_steps_median"] is not None:
            c = o["update_cost_steps_median"]
            out.append({"model": name, "target": "one mask update <= 3 normal steps",
                        "value": f"{c:.2f} steps extra", "pass": c <= 3})
    return out


def targets_table(targets: list[dict[str, Any]]) -> str:
    return markdown_table(["model", "target", "measured", "result"],
                          [[t["model"], t["target"], t["value"], "PASS" if t["pass"] else "FAIL"] for t in targets])


def failed_table(failed: list[dict[str, Any]]) -> str:
    """Failed runs grouped by model and error (first line of the message)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in failed:
        groups[(f["point"]["model"], f["error"].splitlines()[0])].append(f["point"])
    return markdown_table(["model", "runs", "methods", "error"],
                          [[m, len(ps), ", ".join(dict.fromkeys(p["method"] for p in ps)), f"`{err}`"]
                           for (m, err), ps in groups.items()])


def describe_setup(res: dict[str, Any]) -> str:
    """The machine, the timing context and the recipe, as report paragraphs."""
    mach = res["machine"]
    load = ", ".join(f"{x:.2f}" for x in mach["load_avg_at_start"])
    lth = ", ".join(f"{MODELS[m][0]} {r}" for m, r in res["lth_rounds"].items())
    machine_text = (
        f"Machine: {mach['cpu']}, {mach['logical_cores']} logical cores shared with other jobs (load average at "
        f"start {load}); torch {mach['torch']} (CUDA: {mach['cuda']}), Python {mach['python']}; every run "
        f"`threads=1`; grid with {res['jobs']} worker process(es) in parallel, overhead in one process after the "
        f"grid. This invocation took {res['elapsed_s'] / 60:.1f} min ({res['reused']} grid runs reused from the "
        f"command(s) above); the grid's runs add up to {res['grid_job_s'] / 60:.1f} job-minutes of build + fit time.")
    recipe_text = (
        f"Recipe: `{' '.join(res['recipe'])}`"
        + (f"; every sparse row also `{' '.join(res['set'])}`" if res.get("set") else "") + "; no augmentation; test accuracy after the last epoch. Sparse "
        "methods: ERK over every Linear/Conv weight (biases dense), initial masks from the run's seed; "
        "set/snfs/rigl: delta_t = 100, T_end = 0.75, alpha = 0.3 cosine; gmp: dense to target between 0 and 75 % "
        f"of training every delta_t; lth: `sparsity.lth_rounds` = {lth} (R rounds = R + 1 trainings of the nominal "
        "length, rewound to init; its training FLOPs count all of them); small_dense: the dense net narrowed to the "
        "sparse parameter count (MLP hidden widths; small CNN base width nf, layers nf/2, nf, 2nf). FLOPs: per-run "
        "`FlopsMeter` totals divided by the dense run of the same model (train: all training steps; inference: "
        "one forward).")
    return f"{machine_text}\n\n{recipe_text}\n"


OVERHEAD_DEFINITIONS = (
    "Every training step and every `engine.step()` is timed; an update step is one whose `StepInfo.updated` is "
    "set. Update cost = (median update step - median normal step) / median normal step of the same run; "
    "`engine.step()` extra = the same difference for `engine.step()` alone (on RigL update steps it skips the "
    "optimizer step and runs drop/grow), in normal steps; update step / normal step = the whole update step in "
    "normal steps.\n")


def report(args: argparse.Namespace, res: dict[str, Any]) -> str:
    title = "quick smoke run" if args.quick else "RigL family on Fashion-MNIST"
    cmds = "\n".join(f"    {c}" for c in res["commands"])
    parts = [f"## Sparse training ({title})\n",
             ("Command(s) that produced these numbers (grid runs from an earlier command are reused only when "
              f"their config is identical):\n\n{cmds}\n"),
             describe_setup(res)]
    if res["rows"]:
        parts += ["### Accuracy grid\n", grid_tables(res["rows"], res["densities"])]
    if res["failed"]:
        parts += ["### Failed runs\n", failed_table(res["failed"]), ""]
    if res["overhead"]:
        parts += [(f"### Engine overhead (RigL ERK 90 %, delta_t = 100, {res['overhead_epochs']} epoch(s) per run, "
                   "interleaved dense/RigL repeats in one process)\n"),
                  OVERHEAD_DEFINITIONS, overhead_tables(res["overhead"]), ""]
    if res["targets"]:
        parts += ["### Targets\n", targets_table(res["targets"]), ""]
    return "\n".join(parts)


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run on sklearn digits (< 1 minute)")
    ap.add_argument("--models", default="mlp,cnn", help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--seeds", default=None, help="seeds per model: N or mlp=3,cnn=1 (default mlp=3,cnn=1)")
    ap.add_argument("--epochs", default=None, help="epochs per model: N or mlp=5,cnn=1 (default mlp=5,cnn=1)")
    ap.add_argument("--jobs", type=int, default=2, help="grid runs in parallel (worker processes)")
    ap.add_argument("--methods", default="small_dense," + ",".join(dict.fromkeys(m for m, _ in SPARSE_ROWS)),
                    help="sparse methods of the grid (dense always runs); NAME_Mx trains M times longer "
                         "(RigL_Mx: sparsity.multiplier=M), e.g. rigl_2x")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra overrides of every sparse row, e.g. sparsity.init=rescale (dense rows unchanged)")
    ap.add_argument("--densities", default=None, help="comma list (default 0.2,0.1,0.05; --quick: 0.1)")
    ap.add_argument("--uniform", default=None, help="models with RigL-uniform comparison rows (default: all; '' none)")
    ap.add_argument("--lth-rounds", default="2", help="sparsity.lth_rounds of the lth rows: N or mlp=2,cnn=1")
    ap.add_argument("--overhead-repeats", type=int, default=5)
    ap.add_argument("--overhead-epochs", type=int, default=1)
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse identical runs from out/sparse_runs.jsonl")
    ap.add_argument("--render", type=Path, default=None, help="only re-write the markdown from this JSON output")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default out/sparse.json)")
    ap.add_argument("--results", type=Path, default=None, help="markdown output (default RESULTS_sparse.md)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    args.model_list = models
    defaults = ("1", "2") if args.quick else ("mlp=3,cnn=1", "mlp=5,cnn=1")
    args.seed_map = per_model(args.seeds or (defaults[0] if args.quick else _only(defaults[0], models)), models, int)
    args.epoch_map = per_model(args.epochs or (defaults[1] if args.quick else _only(defaults[1], models)), models, int)
    args.method_list = [m for m in args.methods.split(",") if m]
    args.lth_map = per_model(args.lth_rounds, models, int)
    args.uniform_list = models if args.uniform is None else [m for m in args.uniform.split(",") if m]
    args.density_list = [float(d) for d in (args.densities or ("0.1" if args.quick else ",".join(map(str, DENSITIES)))).split(",")]
    if args.quick:
        args.overhead_repeats, args.overhead_epochs = 2, 3
    args.out = args.out or OUT / ("sparse_quick.json" if args.quick else "sparse.json")
    if args.results is None and not args.quick:
        args.results = HERE / "RESULTS_sparse.md"
    return args


def _only(spec: str, models: list[str]) -> str:
    return ",".join(kv for kv in spec.split(",") if kv.split("=")[0] in models)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render is not None:
        args.results.write_text(report(args, json.loads(args.render.read_text())) + "\n")
        print(f"wrote {args.results} from {args.render}")
        return
    t0 = time.perf_counter()
    command = "python benchmarks/bench_sparse.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    recipe = [*RECIPE]
    if args.quick:
        recipe = [QUICK["dataset"], *[r for r in recipe if not r.startswith("sparsity.delta_t")], QUICK["delta_t"]]
    OUT.mkdir(exist_ok=True)
    res: dict[str, Any] = {"machine": machine(), "recipe": recipe, "set": args.set, "jobs": args.jobs, "lth_rounds": args.lth_map,
                           "densities": args.density_list, "rows": [], "runs": [], "failed": [], "reused": 0, "grid_job_s": 0.0,
                           "overhead": {}, "targets": [],
                           "overhead_epochs": args.overhead_epochs, "commands": [command]}
    if not args.skip_grid:
        points = grid(args.model_list, args.seed_map, args.epoch_map, args.method_list, args.density_list,
                      args.uniform_list, args.lth_map, tuple(args.set))
        cache = None if args.quick else OUT / "sparse_runs.jsonl"
        res["runs"], res["failed"] = run_grid(points, recipe, args.jobs, cache, args.reuse, command)
        res["commands"] = list(dict.fromkeys([*(r["produced_by"] for r in res["runs"]), command]))
        res["reused"] = sum(r["produced_by"] != command for r in res["runs"])
        res["grid_job_s"] = sum(r["build_time_s"] + r["wall_time_s"] for r in res["runs"])
        res["rows"] = aggregate(res["runs"])
        res["targets"] += accuracy_targets(res["rows"], args.density_list)
        print(grid_tables(res["rows"], args.density_list), flush=True)
        if res["failed"]:
            print(failed_table(res["failed"]), flush=True)
    if not args.skip_overhead:
        models = OVERHEAD_MODELS
        base = [r for r in recipe if not r.startswith("sparsity.delta_t")]
        base.append(QUICK["delta_t"] if args.quick else "sparsity.delta_t=100")
        res["overhead"] = run_overhead(models, base, args.overhead_repeats, args.overhead_epochs)
        res["targets"] += overhead_targets(res["overhead"])
        print(overhead_tables(res["overhead"]), flush=True)
    res["elapsed_s"] = time.perf_counter() - t0
    text = report(args, res)
    print("\n" + targets_table(res["targets"]) if res["targets"] else "", flush=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    if args.results is not None:
        args.results.write_text(text + "\n")
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

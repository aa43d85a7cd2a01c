"""The report's figures, as matplotlib ``Figure`` objects (object API: no pyplot, no global backend).

Per run (``RUN_FIGURES``; each returns None when the run has nothing to show for it):
* ``acc_matrix``: the accuracy matrices R[i][j] (accuracy on task j after training task i), Class-IL and
  Task-IL, as heat maps;
* ``per_task``: each task's accuracy over the stream (a row of R^T per task; streams of 2+ tasks);
* ``training``: training loss and accuracy per epoch over optimizer steps, task boundaries marked;
* ``masks``: per-layer density and mask turnover at every mask update (``mask_update`` records);
* ``sparcl``: SparCL's data sparsity (examples trained per epoch, DDR) and gradient density per layer (DGM).

Over runs (``compare_figure``): final average accuracy against training FLOPs (log x), one line per
method through its densities (each point labelled with its final density), mean +- std over seeds as
error bars, dense runs as stars and dashed lines.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from sparsecl.loggers.base import require
from sparsecl.registry import Registry
from sparsecl.report.runs import RunData, is_dense, method_label
from sparsecl.train.compare import Row

SCENARIOS = (("class_il", "Class-IL"), ("task_il", "Task-IL"))
FigureFn = Callable[[RunData], Any]
RUN_FIGURES: Registry[FigureFn] = Registry("run figure")


def new_figure(panels: int, width: float = 5.2, height: float = 3.8) -> tuple[Any, list[Any]]:
    Figure = require("matplotlib.figure", "report", "sparsecl report").Figure
    fig = Figure(figsize=(width * panels, height), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


@RUN_FIGURES.register("acc_matrix")
def acc_matrix(run: RunData) -> Any:
    import numpy as np

    mats = run.summary["acc_matrix"]
    fig, axes = new_figure(2, width=4.6, height=4.0)
    for ax, (key, name) in zip(axes, SCENARIOS):
        rows = mats[key]
        n = len(rows)
        grid = np.full((n, n), np.nan)
        for i, row in enumerate(rows):
            grid[i, : len(row)] = row
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", origin="upper")
        for i in range(n):
            for j in range(len(rows[i])):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < 60 else "black")
        ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
        ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
        ax.set_xlabel("evaluated on task (task number)")
        ax.set_ylabel("after training task (task number)")
        ax.set_title(f"{name} accuracy matrix")
        fig.colorbar(im, ax=ax, shrink=0.8).set_label("accuracy (%)")
    fig.suptitle(run.label)
    return fig


@RUN_FIGURES.register("per_task")
def per_task(run: RunData) -> Any:
    mats = run.summary["acc_matrix"]
    n = len(mats["class_il"])
    if n < 2:
        return None
    fig, axes = new_figure(2)
    for ax, (key, name) in zip(axes, SCENARIOS):
        rows = mats[key]
        for j in range(n):
            xs = list(range(j + 1, n + 1))
            ax.plot(xs, [rows[i][j] for i in range(j, n)], marker="o", label=f"task {j + 1}")
        ax.set_xticks(range(1, n + 1))
        ax.set_ylim(0, 100)
        ax.set_xlabel("tasks trained (count)")
        ax.set_ylabel(f"{name} accuracy (%)")
        ax.set_title(f"{name}: each task's accuracy over the stream")
        ax.legend(fontsize=8, ncols=2)
    fig.suptitle(run.label)
    return fig


def _task_ends(run: RunData, ax: Any) -> None:
    for k, r in enumerate(run.events("task_end")[:-1]):
        ax.axvline(r["step"], color="grey", linestyle=":", linewidth=1, label="task boundary" if k == 0 else None)


@RUN_FIGURES.register("training")
def training(run: RunData) -> Any:
    epochs = run.events("epoch")
    if not epochs:
        return None
    steps = [r["step"] for r in epochs]
    fig, axes = new_figure(2)
    for ax, key, ylabel in ((axes[0], "loss", "training loss (cross-entropy, nats)"),
                            (axes[1], "train_acc", "training accuracy (%)")):
        ax.plot(steps, [r[key] for r in epochs], marker=".", label="mean over the epoch")
        _task_ends(run, ax)
        ax.set_xlabel("optimizer step (count)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title("training loss per epoch")
    axes[1].set_title("training accuracy per epoch")
    fig.suptitle(run.label)
    return fig


@RUN_FIGURES.register("masks")
def masks(run: RunData) -> Any:
    updates = run.events("mask_update")
    if not updates:
        return None
    last = run.records[-1]["step"] if run.records else updates[-1]["step"]
    fig, axes = new_figure(2)
    for name in updates[0]["layers"]:
        xs = [r["step"] for r in updates] + [last]
        ys = [100 * r["layers"][name] for r in updates] + [100 * updates[-1]["layers"][name]]
        axes[0].plot(xs, ys, drawstyle="steps-post", label=name)
        moved = [(r["step"], 100 * r["turnover"][name]) for r in updates if name in r.get("turnover", {})]
        axes[1].plot([s for s, _ in moved], [t for _, t in moved], marker="o", markersize=3, linestyle="none",
                     label=name)
    for ax in axes:
        _task_ends(run, ax)
        ax.set_xlabel("optimizer step (count)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("active weights (% of the layer)")
    axes[0].set_title("per-layer density")
    axes[1].set_ylabel("mask turnover (% of the layer's mask)")
    axes[1].set_title(f"mask turnover per update ({len(updates) - 1} updates)")
    fig.suptitle(run.label)
    return fig


@RUN_FIGURES.register("sparcl")
def sparcl(run: RunData) -> Any:
    sc = run.config.get("sparcl", {})
    epochs = run.events("epoch")
    panels = [p for p, on in (("ddr", sc.get("ddr")), ("dgm", sc.get("dgm"))) if on]
    if not panels or not epochs:
        return None
    xs = list(range(1, len(epochs) + 1))
    fig, axes = new_figure(len(panels))
    for ax, panel in zip(axes, panels):
        if panel == "ddr":
            by_task: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for x, r in zip(xs, epochs):
                by_task[r["task"]].append((x, r["examples"]))
            for t, pts in by_task.items():
                ax.plot([x for x, _ in pts], [n for _, n in pts], marker="o", label=f"task {t + 1}")
            ax.set_ylabel("training-set size (examples per epoch)")
            ax.set_title("DDR: examples trained per epoch")
        else:
            for name in epochs[0].get("grad_density", {}):
                ax.plot(xs, [100 * r["grad_density"][name] for r in epochs], marker=".", label=name)
            ax.set_ylabel("gradient density (% of the layer)")
            ax.set_title("DGM: weight-gradient density at each epoch's end")
        ax.set_xlabel("epoch over the stream (count)")
        ax.xaxis.set_major_locator(require("matplotlib.ticker", "report", "sparsecl report").MaxNLocator(integer=True))
        ax.legend(fontsize=8, ncols=2)
    fig.suptitle(run.label)
    return fig


def _mean_std(row: Row, key: str) -> tuple[float, float]:
    import statistics

    v = row.values("final_avg_acc", key)
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def compare_figure(rows: list[Row], labels: list[str]) -> Any:
    """Accuracy vs training FLOPs over settings (rows of runs that differ only in their seed)."""
    tasks = len(rows[0].summaries[0]["acc_matrix"]["class_il"])
    scenarios = SCENARIOS if tasks > 1 else (("class_il", "test"),)
    fig, axes = new_figure(len(scenarios), width=6.0, height=4.4)
    methods: dict[str, list[Row]] = defaultdict(list)
    dense: list[tuple[str, Row]] = []
    for row, label in zip(rows, labels):
        if is_dense(row.summaries[0]):
            dense.append((label, row))
        else:
            methods[method_label(row.summaries[0]["config"])].append(row)
    for ax, (key, name) in zip(axes, scenarios):
        colors = iter(f"C{i}" for i in range(20))
        for method, members in methods.items():
            members = sorted(members, key=lambda r: r.mean("flops", "train"))
            stats = [_mean_std(r, key) for r in members]
            xs = [r.mean("flops", "train") for r in members]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                        color=next(colors), label=method)
            for x, (m, _), r in zip(xs, stats, members):
                ax.annotate(f"{r.mean('density', 'overall'):.2f}", (x, m), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        for label, row in dense:
            mean, std = _mean_std(row, key)
            c = next(colors)
            ax.errorbar([row.mean("flops", "train")], [mean], yerr=[std], marker="*", markersize=12, capsize=3,
                        color=c, linestyle="none", label=f"dense: {label}")
            ax.axhline(mean, color=c, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (log scale)")
        ax.set_ylabel(f"final average {name} accuracy (%)")
        ax.set_title(f"{name} accuracy vs training FLOPs (mean ± std over seeds)", fontsize=10)
        ax.legend(fontsize=8)
    return fig

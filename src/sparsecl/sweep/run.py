"""Run a sweep: skip finished runs, resume interrupted ones, start the rest; then the aggregated table
(Markdown, CSV, JSON) and the report over every finished run.

The sweep folder holds ``sweep.json`` (its runs, their labels and folders: what ``sparsecl report`` reads),
``configs/<run>.yaml`` (each run's resolved config), ``runs/<run>/`` (ordinary run folders) and
``table.{md,csv,json}`` and ``report/``. A run folder that holds a run of another config is an error:
a sweep never overwrites results it did not produce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from sparsecl.configtools import ConfigError
from sparsecl.fileio import atomic_write
from sparsecl.report.runs import RunData, read_run
from sparsecl.report.table import markdown, settings, table_rows, to_csv
from sparsecl.sweep.config import RunSpec, Sweep, resolved
from sparsecl.sweep.executors import EXECUTORS, INTERRUPTED
from sparsecl.train import checkpoint, runfolder


@dataclass
class Outcome:
    """What a sweep did: run names per status before it started, exit codes of the runs it launched."""

    skipped: list[str]
    resumed: list[str]
    started: list[str]
    failed: list[str]
    interrupted: list[str]
    table: list[dict[str, Any]]


def plan(sweep: Sweep) -> tuple[list[RunSpec], list[RunSpec], list[RunSpec]]:
    """(finished, to resume, to start) from the state of each run's folder."""
    finished, resume, start = [], [], []
    for run in sweep.runs:
        folder = sweep.out / "runs" / run.name
        kind = runfolder.state(folder)
        if kind == "foreign":
            raise ConfigError(f"sweep run folder {folder} holds files that are not a sparsecl run; move them away")
        if kind in ("finished", "unfinished"):
            stored = (json.loads((folder / "summary.json").read_text())["config"] if kind == "finished"
                      else checkpoint.load(folder)["config"])
            if stored != resolved(run):
                raise ConfigError(f"sweep run folder {folder} holds a run of another config (the sweep file "
                                  f"changed?); remove it or give the sweep another out")
        {"finished": finished, "unfinished": resume}.get(kind, start).append(run)
    return finished, resume, start


def write_manifest(sweep: Sweep) -> None:
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / "configs").mkdir(exist_ok=True)
    for run in sweep.runs:
        atomic_write(sweep.out / "configs" / f"{run.name}.yaml", yaml.safe_dump(resolved(run), sort_keys=False))
    manifest = {"name": sweep.name, "grids": [[a.name for a in axes] for axes in sweep.grids], "seeds": list(sweep.seeds),
                "runs": [{"name": r.name, "label": r.label, "seed": r.seed, "folder": f"runs/{r.name}"}
                         for r in sweep.runs]}
    atomic_write(sweep.out / "sweep.json", json.dumps(manifest, indent=2) + "\n")


def finished_runs(sweep: Sweep) -> list[RunData]:
    return [read_run(sweep.out / "runs" / r.name, r.label) for r in sweep.runs
            if runfolder.state(sweep.out / "runs" / r.name) == "finished"]


def aggregate(sweep: Sweep, report: bool) -> list[dict[str, Any]]:
    """table.{md,csv,json} (and report/ when asked) over the finished runs."""
    runs = finished_runs(sweep)
    if not runs:
        return []
    rows, labels = settings(runs)
    entries = table_rows(rows, labels)
    atomic_write(sweep.out / "table.md", markdown(entries))
    atomic_write(sweep.out / "table.csv", to_csv(entries))
    atomic_write(sweep.out / "table.json", json.dumps(entries, indent=2) + "\n")
    if report:
        from sparsecl.report.page import write_report
        from sparsecl.report.runs import Inputs

        write_report(Inputs(single=[], all=runs), sweep.out / "report", title=f"sweep {sweep.name}")
    return entries


def run_sweep(sweep: Sweep, report: bool = True, say: Callable[[str], None] = print) -> Outcome:
    finished, resume, start = plan(sweep)
    write_manifest(sweep)
    say(f"sweep {sweep.name}: {len(sweep.runs)} runs in {sweep.out}: {len(finished)} finished (skipped), "
        f"{len(resume)} to resume, {len(start)} to start ({sweep.executor})")
    todo = resume + start
    jobs = [["--resume", str(sweep.out / "runs" / r.name)] if r in resume else
            ["--config", str(sweep.out / "configs" / f"{r.name}.yaml"), "--out", str(sweep.out / "runs" / r.name),
             "--overwrite"] for r in todo]
    codes = EXECUTORS.get(sweep.executor)(jobs, sweep) if jobs else []
    failed = [r.name for r, c in zip(todo, codes) if c not in (0, INTERRUPTED)]
    interrupted = [r.name for r, c in zip(todo, codes) if c == INTERRUPTED]
    table = aggregate(sweep, report)
    return Outcome([r.name for r in finished], [r.name for r in resume], [r.name for r in start], failed,
                   interrupted, table)

"""``sparsecl sweep SWEEP.yaml``: the command's parser and handler."""

from __future__ import annotations

import argparse


def cmd_sweep(args: argparse.Namespace) -> int:
    from sparsecl.configtools import ConfigError
    from sparsecl.loggers.base import require
    from sparsecl.sweep.config import load_sweep
    from sparsecl.sweep.executors import EXECUTORS
    from sparsecl.sweep.run import run_sweep

    sweep = load_sweep(args.sweep)
    if args.list:
        for r in sweep.runs:
            print(r.name)
        return 0
    if args.executor:
        sweep.executor = EXECUTORS.get(args.executor) and args.executor
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        sweep.workers = args.workers
    if not args.no_report:
        require("matplotlib", "report", "sparsecl sweep (its report; or pass --no-report)")
    try:
        out = run_sweep(sweep, report=not args.no_report)
    except KeyboardInterrupt:
        print("sparsecl sweep: interrupted; runs in training wrote checkpoints; run the same command again to resume")
        return 130
    print(f"table: {sweep.out / 'table.md'} (.csv, .json)" + ("" if args.no_report else f"; report: {sweep.out / 'report' / 'report.html'}"))
    if out.failed:
        print(f"sparsecl sweep: {len(out.failed)} runs failed: {', '.join(out.failed)}")
        return 1
    if out.interrupted:
        print(f"sparsecl sweep: {len(out.interrupted)} runs interrupted; run the same command again to resume them")
        return 130
    return 0


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run the cross product of a grid x seeds; skip finished runs, resume interrupted ones",
                       description="Runs every setting of SWEEP.yaml's grid for each seed (locally, or on Slurm through "
                                   "submitit), skipping finished runs and resuming interrupted ones, then writes "
                                   "table.md/.csv/.json (mean ± std over seeds) and report/. See sparsecl.sweep.config "
                                   "for the file format.")
    p.add_argument("sweep", metavar="SWEEP.yaml", help="the sweep file (YAML or TOML)")
    p.add_argument("--executor", help="override the file's executor: local, serial, submitit-local, slurm")
    p.add_argument("--workers", type=int, help="override the file's worker count (local executor)")
    p.add_argument("--no-report", action="store_true", help="write the tables only")
    p.add_argument("--list", action="store_true", help="print the runs' names and exit")
    p.set_defaults(func=cmd_sweep)

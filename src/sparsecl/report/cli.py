"""``sparsecl report RUN_OR_SWEEP... [--out DIR]``: the command's parser and handler."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from sparsecl.report import report

    out = Path(args.out) if args.out else (Path(args.runs[0]) / "report" if len(args.runs) == 1 else Path("report"))
    page, figures = report(args.runs, out)
    print(f"report: {page} ({len(figures)} figures, PNGs and table.md beside it)")
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="figures (PNG) and one self-contained HTML page over runs and sweeps",
                       description="Accuracy matrices, per-task accuracy, training curves, per-layer density and "
                                   "mask turnover, SparCL's data and gradient sparsity for each run given; for "
                                   "several settings accuracy vs training FLOPs and the mean ± std table. Needs "
                                   "matplotlib (pip install 'sparsecl[report]').")
    p.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP", help="finished run folders and sweep folders")
    p.add_argument("--out", help="output folder (default RUN/report for one folder, else ./report)")
    p.set_defaults(func=cmd_report)

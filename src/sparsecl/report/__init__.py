"""``sparsecl report``: figures (PNG, matplotlib: extra ``sparsecl[report]``) and one self-contained HTML
page over finished runs and sweeps. See ``figures`` for what is drawn, ``table`` for the mean +- std table."""

from __future__ import annotations

from pathlib import Path

from sparsecl.report.page import Figure, write_report
from sparsecl.report.runs import read_inputs


def report(paths: list[str | Path], out: str | Path) -> tuple[Path, list[Figure]]:
    """Read the runs/sweeps at ``paths`` and write their report into ``out``."""
    return write_report(read_inputs(paths), Path(out))


__all__ = ["Figure", "report", "read_inputs", "write_report"]

"""``sparsecl compare``: one table over finished runs, runs that differ only in their seed folded into one
row with mean +- std (spec/CONTINUAL.md: "Report mean +- std over seeds").

Two runs are the same setting when their resolved configs agree on every key except the seed and the
keys that cannot change a result's meaning: progress bar, thread count, allocator reuse, evaluation
batch size and checkpointing. FLOPs are shown as "x fewer than" the first row (the baseline).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecl.configtools import ConfigError

# config keys outside a setting's identity
NOT_THE_SETTING = ("seed", "progress", "threads", "malloc_reuse", "eval_batch_size", "checkpoint", "log")


@dataclass
class Row:
    """Runs of one setting (in the order given) and their summaries."""

    names: list[str]
    summaries: list[dict[str, Any]]

    def values(self, *path: str) -> list[float]:
        out = []
        for s in self.summaries:
            v: Any = s
            for key in path:
                v = v[key]
            out.append(float(v))
        return out

    def mean(self, *path: str) -> float:
        return statistics.fmean(self.values(*path))

    def cell(self, *path: str) -> str:
        """``mean`` or ``mean ± std`` (sample std) of a metric over the row's runs."""
        v = self.values(*path)
        return f"{v[0]:.2f}" if len(v) == 1 else f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}"


def read_runs(folders: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, summary) of each finished run; a folder without summary.json is a one-line error."""
    runs = []
    for d in folders:
        f = Path(d) / "summary.json"
        if not f.is_file():
            raise ConfigError(f"{d} has no summary.json (not a finished run)")
        runs.append((Path(d).name, json.loads(f.read_text())))
    return runs


def setting(summary: dict[str, Any]) -> str:
    cfg = {k: v for k, v in summary["config"].items() if k not in NOT_THE_SETTING}
    return json.dumps(cfg, sort_keys=True)


def group(runs: list[tuple[str, dict[str, Any]]], by_setting: bool = True) -> list[Row]:
    """One row per setting, in order of first appearance (``by_setting=False``: one row per run)."""
    rows: dict[str, Row] = {}
    for i, (name, s) in enumerate(runs):
        key = setting(s) if by_setting else str(i)
        rows.setdefault(key, Row([], []))
        rows[key].names.append(name)
        rows[key].summaries.append(s)
    return list(rows.values())


def table(rows: list[Row]) -> str:
    base = rows[0].mean("flops", "train")
    head = (f"{'run':<28} {'seeds':>5} {'Class-IL':>14} {'Task-IL':>14} {'forget':>7} {'train FLOPs':>12} "
            f"{'fewer':>7} {'time (s)':>9} {'density':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fl = r.mean("flops", "train")
        lines.append(f"{r.names[0]:<28} {len(r.names):>5} {r.cell('final_avg_acc', 'class_il'):>14} "
                     f"{r.cell('final_avg_acc', 'task_il'):>14} {r.mean('forgetting', 'class_il'):>7.2f} "
                     f"{fl:>12.3e} {base / fl:>6.1f}x {r.mean('train_time_s'):>9.1f} "
                     f"{r.mean('density', 'overall'):>8.4f}")
    return "\n".join(lines)

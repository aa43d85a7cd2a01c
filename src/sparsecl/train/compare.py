"""``sparsecl compare``: one table over finished runs, runs that differ only in their seed folded into one
row with mean +- std over seeds.

* Run identity: two folders whose resolved configs agree on every key, the seed included, hold the same
  run (a killed-and-resumed copy, a copied folder): counted once, never as a second seed.
* Setting: runs whose configs agree on every key except the seed and the keys that cannot change a
  result's meaning (progress bar, thread count, allocator reuse, evaluation batch size, checkpointing,
  device, extra loggers) are one setting, one row. A row is named by the settings that differ between the rows
  (``sparsity.density=0.1 sparsity.method=rigl``), not by a folder name.
* Runs on different datasets or models are refused (their numbers do not compare) unless ``mixed``.
* FLOPs relative to the first row: "5.0x fewer" or "2.0x more".
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecl.configtools import ConfigError

# config keys outside a setting's identity
NOT_THE_SETTING = ("seed", "progress", "threads", "malloc_reuse", "eval_batch_size", "checkpoint", "device", "log")
MUST_MATCH = ("dataset", "model")  # keys whose mix makes a table meaningless
FORMATS = ("table", "markdown", "csv")


@dataclass
class Row:
    """Runs of one setting (in the order given) and their summaries."""

    names: list[str]
    summaries: list[dict[str, Any]]
    label: str = ""

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

    @property
    def scenario(self) -> str:
        return scenario_of(self.summaries[0])


def scenario_of(summary: dict[str, Any]) -> str:
    """The run's scenario (older summaries have no ``scenario`` field: read it from the stream)."""
    if "scenario" in summary:
        return summary["scenario"]
    stream = summary["config"].get("stream", "class-il")
    return "domain-il" if stream in ("permuted", "rotated") else stream


def read_runs(folders: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, summary) of each finished run; a folder without a readable summary.json is a
    one-line error."""
    runs = []
    for d in folders:
        f = Path(d) / "summary.json"
        if not f.is_file():
            raise ConfigError(f"{d} has no summary.json (not a finished run)")
        try:
            s = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{f}: cannot read ({type(e).__name__})") from None
        if not isinstance(s, dict) or not isinstance(s.get("config"), dict):
            raise ConfigError(f"{f}: not a sparsecl summary (no config)")
        runs.append((Path(d).name, s))
    return runs


def flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v and prefix + k not in ("sparsity.custom_densities",):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _in_setting(key: str) -> bool:
    return key.split(".", 1)[0] not in NOT_THE_SETTING


def setting(summary: dict[str, Any]) -> str:
    cfg = {k: v for k, v in flat(summary["config"]).items() if _in_setting(k)}
    return json.dumps(cfg, sort_keys=True)


def identity(summary: dict[str, Any]) -> str:
    """The run itself: its setting and its seed."""
    return json.dumps([setting(summary), summary["config"].get("seed")])


def same_runs(runs: list[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The runs with copies of one run (same setting and seed) kept once, and a note per copy dropped."""
    seen: dict[str, str] = {}
    kept, notes = [], []
    for name, s in runs:
        key = identity(s)
        if key in seen:
            notes.append(f"note: {name} is the same run as {seen[key]} (same config and seed, e.g. a resumed "
                         "copy); counted once")
            continue
        seen[key] = name
        kept.append((name, s))
    return kept, notes


def check_comparable(runs: list[tuple[str, dict[str, Any]]], mixed: bool) -> list[str]:
    """Refuse (or with ``mixed``, warn about) runs on different datasets or models."""
    lines = []
    for key in MUST_MATCH:
        values = sorted({str(s["config"].get(key)) for _, s in runs})
        if len(values) > 1:
            msg = f"the runs mix {key}s ({', '.join(values)}): their numbers do not compare"
            if not mixed:
                raise ConfigError(f"{msg}; compare runs of one {key}, or pass --mixed")
            lines.append(f"warning: {msg}")
    return lines


def group(runs: list[tuple[str, dict[str, Any]]], by_setting: bool = True) -> list[Row]:
    """One row per setting, in order of first appearance (``by_setting=False``: one row per run), each
    labelled by the settings that differ between the rows (a folder name when nothing differs)."""
    rows: dict[str, Row] = {}
    for i, (name, s) in enumerate(runs):
        key = setting(s) if by_setting else str(i)
        rows.setdefault(key, Row([], []))
        rows[key].names.append(name)
        rows[key].summaries.append(s)
    out = list(rows.values())
    flats = [{k: v for k, v in flat(r.summaries[0]["config"]).items() if _in_setting(k)} for r in out]
    keys = sorted({k for f in flats for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]
    for r, f in zip(out, flats):
        parts = [f"{k}={_show(f.get(k))}" for k in differ]
        if not by_setting:
            parts.append(f"seed={r.summaries[0]['config'].get('seed')}")
        r.label = " ".join(parts) if differ or not by_setting else r.names[0]
    return out


def _show(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v))
    return "none" if v is None else str(v)


def relative(base: float, flops: float) -> str:
    """FLOPs against the first row's: "5.0x fewer", "2.0x more", "1.0x"."""
    if flops <= 0 or base <= 0:
        return "-"
    ratio = base / flops
    if abs(ratio - 1) < 0.05:
        return "1.0x"
    return f"{ratio:.1f}x fewer" if ratio > 1 else f"{1 / ratio:.1f}x more"


COLUMNS = ("setting", "seeds", "scenario", "Class-IL", "Task-IL", "forgetting", "train FLOPs", "vs first",
           "time (s)", "density")


def records(rows: list[Row]) -> list[list[str]]:
    """The table's cells, row by row (Task-IL is "-" for Domain-IL: every task owns every class)."""
    base = rows[0].mean("flops", "train")
    out = []
    for r in rows:
        fl = r.mean("flops", "train")
        domain = r.scenario == "domain-il"
        out.append([r.label, str(len(r.names)), r.scenario,
                    r.cell("final_avg_acc", "class_il"), "-" if domain else r.cell("final_avg_acc", "task_il"),
                    f"{r.mean('forgetting', 'class_il'):.2f}", f"{fl:.3e}", relative(base, fl),
                    f"{r.mean('train_time_s'):.1f}", f"{r.mean('density', 'overall'):.4f}"])
    return out


def render(rows: list[Row], fmt: str = "table") -> str:
    """The rows as an aligned text table, a Markdown table or CSV. Under Domain-IL the Class-IL column
    holds the Domain-IL accuracy."""
    cells = records(rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(cells)
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    legend = _short_labels(rows, cells)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS)]
    def line(c: list[str] | tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip()
    head = line(COLUMNS)
    return "\n".join([head, "-" * len(head), *map(line, cells), *legend])


LABEL_MAX = 60  # longer setting labels make a terminal table unreadable: the rows get their folder names


def _short_labels(rows: list[Row], cells: list[list[str]]) -> list[str]:
    """In the text table, labels longer than ``LABEL_MAX`` become each row's (first) folder name, and the
    settings that differ are listed under the table; nothing changes when the names would not be unique."""
    if all(len(c[0]) <= LABEL_MAX for c in cells):
        return []
    names = [Path(r.names[0]).name + (f" (+{len(r.names) - 1})" if len(r.names) > 1 else "") for r in rows]
    if len(set(names)) < len(names):
        return []
    legend = ["", "settings that differ:"] + [f"  {n}: {c[0]}" for n, c in zip(names, cells)]
    for c, n in zip(cells, names):
        c[0] = n
    return legend


def table(rows: list[Row]) -> str:
    return render(rows, "table")

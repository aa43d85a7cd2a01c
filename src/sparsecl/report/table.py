"""The mean +- std table over settings (runs that differ only in their seed, ``train.compare.group``), as
plain rows and as Markdown, CSV and HTML. FLOPs "fewer" are relative to the first dense setting (else the
first setting)."""

from __future__ import annotations

import csv
import html
import io
import statistics
from typing import Any

from sparsecl.report.runs import RunData, is_dense, method_label
from sparsecl.train.compare import Row, group

# (key in a table row, header); metrics with a std carry ``<key>_std`` too
COLUMNS = (("setting", "setting"), ("method", "method"), ("seeds", "seeds"), ("class_il", "Class-IL (%)"),
           ("task_il", "Task-IL (%)"), ("forgetting", "forgetting (points)"), ("train_flops", "training FLOPs"),
           ("fewer", "FLOPs vs dense (x fewer)"), ("density", "final density"), ("train_time_s", "training time (s)"))
TIMING = ("train_time_s",)  # the wall-clock columns (differ between identical runs)


def settings(runs: list[RunData]) -> tuple[list[Row], list[str]]:
    """Rows of runs per setting (order of first appearance) and each setting's label (its first run's)."""
    rows = group([(r.label, r.summary) for r in runs])
    return rows, [r.names[0] for r in rows]


def _stat(row: Row, *path: str) -> tuple[float, float | None]:
    v = row.values(*path)
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


def table_rows(rows: list[Row], labels: list[str]) -> list[dict[str, Any]]:
    base_row = next((r for r in rows if is_dense(r.summaries[0])), rows[0])
    base = base_row.mean("flops", "train")
    out = []
    for row, label in zip(rows, labels):
        entry: dict[str, Any] = {"setting": label, "method": method_label(row.summaries[0]["config"]),
                                 "seeds": sorted(s["seed"] for s in row.summaries), "runs": list(row.names)}
        for key, path in (("class_il", ("final_avg_acc", "class_il")), ("task_il", ("final_avg_acc", "task_il")),
                          ("forgetting", ("forgetting", "class_il"))):
            entry[key], entry[f"{key}_std"] = _stat(row, *path)
        flops = row.mean("flops", "train")
        entry.update(train_flops=flops, fewer=base / flops, density=row.mean("density", "overall"),
                     train_time_s=row.mean("train_time_s"))
        out.append(entry)
    return out


def _cell(entry: dict[str, Any], key: str) -> str:
    v = entry[key]
    if key == "seeds":
        return ",".join(map(str, v))
    if key in ("class_il", "task_il", "forgetting"):
        std = entry[f"{key}_std"]
        return f"{v:.2f}" if std is None else f"{v:.2f} ± {std:.2f}"
    if key == "train_flops":
        return f"{v:.3e}"
    if key == "fewer":
        return f"{v:.1f}x"
    if key == "density":
        return f"{v:.4f}"
    if key == "train_time_s":
        return f"{v:.1f}"
    return str(v)


def markdown(entries: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(e, k) for k, _ in COLUMNS) + " |" for e in entries]
    return "\n".join(lines) + "\n"


def to_csv(entries: list[dict[str, Any]]) -> str:
    keys = [k for k, _ in COLUMNS] + ["class_il_std", "task_il_std", "forgetting_std", "runs"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    for e in entries:
        w.writerow({**e, "seeds": ",".join(map(str, e["seeds"])), "runs": ",".join(e["runs"])})
    return buf.getvalue()


def to_html(entries: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(e, k))}</td>" for k, _ in COLUMNS) + "</tr>"
                   for e in entries)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

"""What a report reads: finished run folders (summary.json, metrics.jsonl) and sweep folders (sweep.json,
written by ``sparsecl sweep``, naming its runs and their settings' labels)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsecl.configtools import ConfigError


@dataclass
class RunData:
    """One finished run: its folder, summary, metrics.jsonl records and the label of its setting."""

    folder: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    label: str

    @property
    def config(self) -> dict[str, Any]:
        return self.summary["config"]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == kind]


@dataclass
class Inputs:
    """The runs of a report: those given one by one (each gets its own figures) and all runs (compared)."""

    single: list[RunData] = field(default_factory=list)
    all: list[RunData] = field(default_factory=list)


def read_run(folder: Path, label: str | None = None) -> RunData:
    folder = Path(folder)
    f = folder / "summary.json"
    if not f.is_file():
        raise ConfigError(f"{folder} is neither a finished run (no summary.json) nor a sweep (no sweep.json)")
    try:
        summary = json.loads(f.read_text())
        lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").is_file() else []
        records = [json.loads(x) for x in lines if x.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{folder}: cannot read its summary.json/metrics.jsonl ({str(e).splitlines()[0]})") from None
    return RunData(folder, summary, records, label or folder.name)


def read_inputs(paths: list[str | Path]) -> Inputs:
    """Run folders and sweep folders, in the order given; a sweep contributes its finished runs, labelled
    by their setting, to the comparison only."""
    out = Inputs()
    for p in map(Path, paths):
        manifest = p / "sweep.json"
        if manifest.is_file():
            sweep = json.loads(manifest.read_text())
            done = [r for r in sweep["runs"] if (p / r["folder"] / "summary.json").is_file()]
            if not done:
                raise ConfigError(f"sweep {p} has no finished run yet")
            out.all += [read_run(p / r["folder"], r["label"]) for r in done]
        else:
            run = read_run(p)
            out.single.append(run)
            out.all.append(run)
    if not out.all:
        raise ConfigError("give at least one run or sweep folder")
    return out


def method_label(config: dict[str, Any]) -> str:
    """How a run trains, without its density: ``derpp``, ``derpp + rigl``, ``derpp + SparCL (TDM, DDR, DGM)``."""
    cl = config["continual"]["method"]
    sc, sp = config.get("sparcl", {}), config["sparsity"]
    parts = [name.upper() for name in ("tdm", "ddr", "dgm") if sc.get(name)]
    if sc.get("tdm"):
        return f"{cl} + SparCL ({', '.join(parts)})"
    sparse = "" if sp["method"] in ("auto", "dense") or sp["density"] >= 1 else f" + {sp['method']}"
    return f"{cl}{sparse}" + (f" + SparCL ({', '.join(parts)})" if parts else "")


def is_dense(summary: dict[str, Any]) -> bool:
    return summary["density"]["overall"] >= 1.0 and not summary["config"].get("sparcl", {}).get("tdm")

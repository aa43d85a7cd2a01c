"""The sweep file: a base config, a grid of axes and seeds; its cross product as runs.

::

    name: fmnist-methods           # the sweep's folder is runs/sweeps/<name> unless ``out`` is given
    base: {dataset: fashion-mnist, tasks: 5, epochs: 1, method: derpp, buffer_size: 500}
    grid:
      method: [er, derpp]          # an axis of values of one config key
      sparsity:                    # an axis of named variants, each a set of config keys
        dense: {}
        rigl-90: {sparsity.method: rigl, sparsity.density: 0.1}
    seeds: [0, 1, 2]
    executor: local                # local (process pool) | serial | submitit-local | slurm
    workers: 2
    slurm: {partition: gpu, timeout_min: 120, cpus_per_task: 8, gpus_per_node: 1}

``grid`` may also be a list of such mappings: the union of their cross products (a dense baseline beside a
method x density grid, say). Runs are ordered grid by grid and axis by axis as written, seeds innermost. Every run's config is resolved and validated
before anything starts; a bad file is one line naming the key (and the run) at fault.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsecl.config import TrainConfig
from sparsecl.configtools import ConfigError, build, load_file, normalise, resolve_key, to_dict

EXECUTOR_NAMES = ("local", "serial", "submitit-local", "slurm")


@dataclass
class SlurmConfig:
    """Slurm resources per run (submitit's ``slurm_*`` parameters)."""

    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    mem_gb: int | None = None
    array_parallelism: int = 64


@dataclass
class Axis:
    """One grid axis: ``key`` and its values (``variants`` maps each value's label to its config keys)."""

    name: str
    variants: dict[str, dict[str, Any]]


@dataclass
class RunSpec:
    """One run of the sweep: its folder name, its setting's label (without the seed), seed and config."""

    name: str
    label: str
    seed: int
    config: Any  # TrainConfig


@dataclass
class Sweep:
    name: str
    out: Path
    base: dict[str, Any]
    grids: list[list[Axis]]
    seeds: tuple[int, ...] = (0,)
    executor: str = "local"
    workers: int = 1
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    runs: list[RunSpec] = field(default_factory=list)


SWEEP_KEYS = ("name", "out", "base", "grid", "seeds", "executor", "workers", "slurm")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def _value_label(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _axis(name: str, values: Any, where: str) -> Axis:
    if isinstance(values, dict):
        if not values or not all(isinstance(v, dict) or v is None for v in values.values()):
            raise ConfigError(f"{where}: grid axis {name!r} as a mapping needs variant: {{key: value, ...}} entries")
        return Axis(name, {str(k): dict(v or {}) for k, v in values.items()})
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: grid axis {name!r} must be a non-empty list of values or a mapping of variants")
    key = resolve_key(TrainConfig, name)
    if key == "seed":
        raise ConfigError(f"{where}: give seeds as `seeds: [...]`, not as a grid axis")
    return Axis(name, {_value_label(v): {key: v} for v in values})


def load_sweep(path: str | Path) -> Sweep:
    """Read, expand and validate a sweep file (YAML or TOML)."""
    path = Path(path)
    data = load_file(path)
    where = f"sweep {path}"
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(SWEEP_KEYS)}")
    name = data.get("name") or path.stem
    if not isinstance(name, str) or not _slug(name):
        raise ConfigError(f"{where}: name must be a non-empty string")
    base = data.get("base") or {}
    grids = data.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]
    if not isinstance(base, dict) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"{where}: base must be a mapping and grid a mapping of axes (or a list of them)")
    if "seed" in base:
        raise ConfigError(f"{where}: give seeds as `seeds: [...]`, not base.seed")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds repeat: {seeds}")
    executor = data.get("executor", "local")
    if executor not in EXECUTOR_NAMES:
        raise ConfigError(f"{where}: executor {executor!r} is not valid; choose one of: {', '.join(EXECUTOR_NAMES)}")
    workers = data.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{where}: workers must be an integer >= 1, got {workers!r}")
    slurm_data = data.get("slurm") or {}
    if not isinstance(slurm_data, dict):
        raise ConfigError(f"{where}: slurm must be a mapping")
    slurm = build(SlurmConfig, slurm_data, "slurm.")
    out = Path(data["out"]) if data.get("out") else Path("runs") / "sweeps" / _slug(name)
    axes = [[_axis(str(k), v, where) for k, v in g.items()] for g in grids]
    sweep = Sweep(name, out, base, axes, tuple(seeds), executor, workers, slurm)
    sweep.runs = expand(sweep, where)
    return sweep


def expand(sweep: Sweep, where: str) -> list[RunSpec]:
    """The cross product of each grid's axes' values, times the seeds, each as a validated TrainConfig."""
    base = normalise(TrainConfig, sweep.base)
    runs = []
    combos = [(axes, combo) for axes in sweep.grids for combo in itertools.product(*[list(a.variants.items()) for a in axes])]
    for axes, combo in combos:
        label = "_".join(f"{a.name}={v}" for a, (v, _) in zip(axes, combo)) or "base"
        for seed in sweep.seeds:
            data = _copy(base)
            for _, keys in combo:
                for k, v in normalise(TrainConfig, keys).items():
                    _merge(data, k, v)
            data["seed"] = seed
            name = _slug(f"{label}_s{seed}")
            try:
                cfg = build(TrainConfig, data)
            except ConfigError as e:
                raise ConfigError(f"{where}: run {name}: {e}") from None
            runs.append(RunSpec(name, label, seed, cfg))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two runs would share the folder name {next(n for n in names if names.count(n) > 1)}")
    return runs


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _merge(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a normalised (nested) entry into ``data``, section by section."""
    if isinstance(value, dict) and isinstance(data.get(key), dict):
        for k, v in value.items():
            _merge(data[key], k, v)
    else:
        data[key] = value


def resolved(run: RunSpec) -> dict[str, Any]:
    return to_dict(run.config)


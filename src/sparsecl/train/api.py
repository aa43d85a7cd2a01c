"""``sparsecl.train(config)``: a whole run from Python, the same as ``sparsecl train`` on the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml

from sparsecl.config import TrainConfig
from sparsecl.configtools import build, normalise, resolve_key, set_path, to_dict
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer


def train(config: TrainConfig | dict[str, Any] | None = None, out_dir: str | Path | None = None, *,
          stream_out: Callable[[str], Any] = print, **overrides: Any) -> dict[str, Any]:
    """Train one run and return its summary (the dict written to ``out_dir/summary.json``).

    ``config``: a ``TrainConfig``, or a (nested or dotted-key) dict of its fields; ``overrides`` are
    dotted keys with ``__`` for the dot (``sparsity__density=0.1``) or bare keys (``epochs=3``), applied on
    top. ``out_dir`` (default ``runs/<dataset>-<model>-...-<time>``) receives config.yaml, metrics.jsonl,
    summary.json and checkpoints, as from the CLI; it must be empty or new.
    """
    cfg = _config(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / default_run_name(cfg)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} is not empty; give a new or empty out_dir")
    out.mkdir(parents=True, exist_ok=True)
    run = build_run(cfg)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return Trainer(run, out, stream_out=stream_out).fit()


def _config(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    if isinstance(config, TrainConfig) and not overrides:
        return config
    data = normalise(TrainConfig, to_dict(config) if isinstance(config, TrainConfig) else dict(config or {}))
    for key, value in overrides.items():
        set_path(data, resolve_key(TrainConfig, key.replace("__", ".")), value)
    return build(TrainConfig, data)


def default_run_name(cfg: TrainConfig) -> str:
    return (f"{cfg.dataset}-{cfg.model}-{cfg.continual.method}-{cfg.sparsity.method}-s{cfg.seed}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}")

"""``sparsecl.train(config)``: a whole run from Python, the same as ``sparsecl train`` on the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from sparsecl.config import TrainConfig
from sparsecl.configtools import build, make_config, normalise, resolve_key, set_path, to_dict
from sparsecl.train import checkpoint, runfolder
from sparsecl.train.build import build_run
from sparsecl.train.loop import Trainer


def train(config: TrainConfig | dict[str, Any] | None = None, out_dir: str | Path | None = None, *,
          overwrite: bool = False, stream_out: Callable[[str], Any] = print, **overrides: Any) -> dict[str, Any]:
    """Train one run and return its summary (the dict written to ``out_dir/summary.json``).

    ``config``: a ``TrainConfig``, or a (nested or dotted-key) dict of its fields; ``overrides`` are
    dotted keys with ``__`` for the dot (``sparsity__density=0.1``) or bare keys (``epochs=3``), applied on
    top. ``out_dir`` (default ``runs/<dataset>-<model>-...-<time>``) receives config.yaml, metrics.jsonl,
    summary.json and checkpoints, as from ``sparsecl train --out``, under the same rules: new or empty, or
    a sparsecl run folder replaced with ``overwrite=True``. ``stream_out`` receives the printed lines.
    """
    cfg = _config(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / default_run_name(cfg)
    runfolder.check_new(out, overwrite)  # fail before the data is loaded
    run = build_run(cfg)
    with runfolder.open_new(out, overwrite, note=stream_out, config=to_dict(cfg)):
        return Trainer(run, out, stream_out=stream_out).fit()


def resume(run_dir: str | Path, *, stream_out: Callable[[str], Any] = print) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint (``sparsecl train --resume``); its summary."""
    run_dir = Path(run_dir)
    with runfolder.open_existing(run_dir, note=stream_out):
        if runfolder.state(run_dir) == "finished":
            stream_out(runfolder.finished_note(run_dir))
            return json.loads((run_dir / "summary.json").read_text())
        ck = checkpoint.load(run_dir, note=stream_out)
        trainer = Trainer(build_run(make_config(TrainConfig, ck["config"])), run_dir, stream_out=stream_out)
        trainer.load_checkpoint_state(ck)
        return trainer.fit()


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

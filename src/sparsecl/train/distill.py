"""Knowledge distillation from a trained teacher into the model being trained, as a training option.

``distill.teacher=PATH`` (a finished run's folder, or a file written by ``sparsecl export``) turns it on:
the teacher is rebuilt from its own config (any model the library makes, e.g. a dense or wider network
distilled into a sparse student) and, at every step, the current-data part of the method's loss becomes

    (1 - w) * L_current + w * T^2 KL(softmax(v / T) || softmax(z / T))

with v the teacher's and z the student's logits on the current batch (Hinton, Vinyals and Dean, 2015,
arXiv:1503.02531; ``losses.DistillationLoss``). Replay terms of the continual method (DER++'s
logit and label terms, ...) are kept as they are, so the option composes with every method; for plain
training (``method=sgd``) it is exactly Hinton's loss. SparCL's importance scores see the distilled
current-data loss as their "current" part.

The loss logged per epoch (and checked for NaN before the backward) is the method's, before the
distillation term; a non-finite teacher term is caught at the next step's check, which names the layer.

Cost accounting: the teacher's forward passes are not student training FLOPs; they are reported apart
in ``summary.json`` under ``distill`` (dense forward FLOPs x examples), so the bill stays honest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsecl.configtools import ConfigError
from sparsecl.contract import Component, LoopState, StepOutput
from sparsecl.data.batch import Batch
from sparsecl.fileio import load_torch
from sparsecl.losses import DistillConfig, DistillationLoss  # noqa: F401 - DistillConfig: its old home


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The config of the run in ``run_dir``: its ``config.yaml`` (written by ``sparsecl train``), else the
    ``config`` of its ``summary.json`` (runs driven through the Python API)."""
    import yaml

    cfg_file, summary = run_dir / "config.yaml", run_dir / "summary.json"
    if not (cfg_file.is_file() or summary.is_file()):
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml or summary.json)")
    try:
        if cfg_file.is_file():
            config = yaml.safe_load(cfg_file.read_text())
        else:
            config = json.loads(summary.read_text()).get("config")
    except (yaml.YAMLError, ValueError, AttributeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{run_dir}: damaged config.yaml/summary.json ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{run_dir}: its config is not a mapping of keys to values")
    return config


def read_run_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final weights a finished run wrote to ``run_dir/final_model.pt``."""
    weights = run_dir / "final_model.pt"
    if not weights.is_file():
        raise ConfigError(f"{run_dir} has no final_model.pt (the run did not finish, or checkpoint.keep_model=false)")
    state = load_torch(weights)  # weights_only, CRC-checked: FileCorrupt is a one-line ValueError
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"{weights} is not a state_dict (names -> tensors)")
    return state


def read_trained(path: str | Path, overrides: list[str] | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """(TrainConfig, weights) of a trained model: a run folder (``config.yaml`` + ``final_model.pt``) or a
    ``sparsecl export`` file (config in its header). The config gets ``device=cpu`` and ``overrides``."""
    from sparsecl.config import TrainConfig
    from sparsecl.configtools import make_config
    from sparsecl.export.format import load_compressed

    path = Path(path)
    if path.is_dir():
        config, state = read_run_config(path), read_run_weights(path)
    elif path.is_file():
        state, meta = load_compressed(path)
        config = meta.get("config")
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: holds no sparsecl config (written by save_compressed without meta={{'config': ...}}?)")
    else:
        raise ConfigError(f"no run folder or exported model at {path}")
    return make_config(TrainConfig, config, ["device=cpu", *(overrides or [])]), state


def build_trained(cfg: Any, state: dict[str, torch.Tensor], ds: Any, device: torch.device) -> nn.Module:
    """The model of ``cfg`` for dataset ``ds`` with the trained weights ``state``, on ``device``."""
    from sparsecl.train.build import build_model

    model = build_model(cfg, ds, torch.device("cpu"))
    check_state_matches(model.state_dict(), state)
    model.load_state_dict(state)
    return model.to(device)


def check_state_matches(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes of ``state`` against the model built from the stored config; the first
    difference as one line (``load_state_dict``'s own error is a multi-line dump)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        what = (f"missing {missing[:3]}" if missing else "") + (" and " if missing and extra else "") + (
            f"unexpected {extra[:3]}" if extra else "")
        raise ConfigError(f"the weights do not belong to the model of their config: {what}")
    for name, want in expected.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ConfigError(f"the weights do not belong to the model of their config: {name} is "
                              f"{str(got.dtype).removeprefix('torch.')}{list(got.shape)}, the model needs "
                              f"{str(want.dtype).removeprefix('torch.')}{list(want.shape)}")


class Distillation(Component):
    """Adds the teacher's soft targets to the current-data loss (see the module docstring). Runs in
    ``before_backward`` ahead of every other component, so they all see the distilled loss."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float, teacher_flops: int) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.loss = DistillationLoss(temperature, weight)
        self.weight = weight
        self.teacher_flops = int(teacher_flops)  # dense forward FLOPs of one example
        self.examples = 0

    def before_backward(self, state: LoopState, batch: Batch, out: StepOutput) -> None:
        with torch.no_grad():
            v = self.teacher(batch.x)
        if v.shape != out.logits.shape:
            raise ValueError(f"distill: teacher logits {tuple(v.shape)} do not match the student's "
                             f"{tuple(out.logits.shape)} (a teacher of another dataset or head?)")
        self.examples += len(batch)
        soft = self.weight * self.loss.soft(out.logits, v)
        if out.parts and "current" in out.parts:
            current = out.parts["current"]
            out.parts["current"] = (1.0 - self.weight) * current + soft
            out.loss = out.loss - current + out.parts["current"]
        else:  # the whole loss is the current-data loss
            out.loss = (1.0 - self.weight) * out.loss + soft

    def report(self) -> dict[str, Any]:
        return {"teacher_examples": self.examples, "teacher_forward_flops": self.teacher_flops * self.examples}

    def state_dict(self) -> dict[str, Any]:
        return {"examples": self.examples}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.examples = int(sd["examples"])

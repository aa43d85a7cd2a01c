"""sparsecl: sparse training and sparse continual learning on one engine.

Importing the package has no side effects: no threads set, no files touched, no RNG seeded; it does not
even import torch. The public names below load their module on first use (docs/api.md documents them):

* your own loop, sparse training: ``Sparsifier`` (``MaskEngine`` underneath), ``SparsityConfig``;
* your own loop, continual learning: ``Buffer``, ``ERReplay``, ``DERReplay``, ``DERppReplay``;
* SparCL's parts at the loop's named moments: ``TaskAwareDynamicMasking``, ``DynamicDataRemoval``,
  ``DynamicGradientMasking``, ``SparclConfig``; the contract ``Component``, ``Pipeline``, ``LoopState``,
  ``StepOutput``, ``Batch``, ``Task``;
* the whole run: ``train(config)``, ``TrainConfig``, ``build_run``, ``Trainer``;
* your own data: ``ArrayDataset`` (``.from_tensors``), ``register_dataset``, ``register_image_folder``,
  ``load_dataset``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Sparsifier": "sparsecl.sparse.sparsifier",
    "MaskEngine": "sparsecl.sparse.engine",
    "SparsityConfig": "sparsecl.sparse.config",
    "Buffer": "sparsecl.continual.buffer",
    "ERReplay": "sparsecl.continual.replay",
    "DERReplay": "sparsecl.continual.replay",
    "DERppReplay": "sparsecl.continual.replay",
    "TaskAwareDynamicMasking": "sparsecl.sparcl.tdm",
    "DynamicDataRemoval": "sparsecl.sparcl.ddr",
    "DynamicGradientMasking": "sparsecl.sparcl.dgm",
    "SparclConfig": "sparsecl.sparcl.config",
    "Component": "sparsecl.contract",
    "LoopState": "sparsecl.contract",
    "StepOutput": "sparsecl.contract",
    "Pipeline": "sparsecl.contract",
    "Task": "sparsecl.data.stream",
    "Batch": "sparsecl.data.batch",
    "train": "sparsecl.train",  # the package, callable: sparsecl.train(config) is sparsecl.train.api.train
    "TrainConfig": "sparsecl.config",
    "build_run": "sparsecl.train.build",
    "Trainer": "sparsecl.train.loop",
    "ArrayDataset": "sparsecl.data.dataset",
    "register_dataset": "sparsecl.data.registry",
    "register_image_folder": "sparsecl.data.registry",
    "load_dataset": "sparsecl.data.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsecl' has no attribute {name!r}")
    value = importlib.import_module(module) if name == "train" else getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""The resolved configuration of one run: typed, validated dataclasses (the CLI stops at this file).

Sections: the root (data, model, optimisation, run), ``continual`` (method, buffer), ``sparsity``
(the mask engine: RigL family), ``sparcl`` (TDM, DDR, DGM), ``checkpoint``. Bare keys resolve to the
unique section that has them (``buffer_size`` -> ``continual.buffer_size``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sparsecl.configtools import choices, coerce, helpfield
from sparsecl.continual.config import ContinualConfig
from sparsecl.continual.methods import CL_METHODS
from sparsecl.continual.methods.penalty import AnchoredPenalty
from sparsecl.loggers import LOGGERS
from sparsecl.optim import LR_SCHEDULES, OPTIMIZERS
from sparsecl.sparcl.config import SparclConfig
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.methods import SPARSE_METHODS, SparseMethod
from sparsecl.losses import DistillConfig

AUGMENTS = ("auto", "none", "crop-flip", "crop")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class CheckpointConfig:
    """When to write crash-safe checkpoints (see sparsecl.train.checkpoint)."""

    every: int = helpfield("also checkpoint every N optimizer steps (0: only at task ends)", default=0)
    minutes: float = helpfield("also checkpoint after this many minutes of wall time since the last one, so a "
                               "long first task is resumable (0: off)", default=5.0)
    at_task_end: bool = helpfield("checkpoint after every task's evaluation", default=True)
    keep_model: bool = helpfield("write final_model.pt (the trained weights) into the run folder", default=True)

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"checkpoint.every must be >= 0, got {self.every}")
        if not (isinstance(self.minutes, (int, float)) and 0 <= self.minutes < float("inf")):
            raise ValueError(f"checkpoint.minutes must be a number >= 0, got {self.minutes}")


@dataclass
class TrainConfig:
    """Everything that determines a run. Defaults: dense MLP on single-task Fashion-MNIST."""

    BARE_KEY_SECTIONS = ("continual",)  # `method=derpp` means continual.method (sparsity.method is dotted)

    # data
    dataset: str = helpfield("dataset name (sparsecl datasets lists them)", default="fashion-mnist")
    data_dir: str | None = helpfield("directory holding the dataset files (else SPARSECL_DATA, cache, system)", default=None)
    verify_data: bool = helpfield("check the dataset files against their published checksums (false: your own "
                                  "copy in the same format, e.g. a subset)", default=True)
    download: bool | None = helpfield("download when not found locally (none: try when online)", default=None)
    stream: str = helpfield("class-il (one head, no task id) | task-il (trained with a task-masked head, "
                            "evaluated with the task id) | permuted | rotated (Domain-IL: every task has every class)",
                            default="class-il")
    tasks: int = helpfield("number of tasks (1: ordinary training)", default=1)
    class_order: tuple[int, ...] | None = helpfield("class order for the split, e.g. 3,1,0,2,... (default natural)", default=None)
    validation: float = helpfield("fraction of each class's training examples held out and evaluated on INSTEAD of "
                                  "the test split, for tuning (0: train on all, evaluate on test); the held-out "
                                  "examples are the same for every seed", default=0.0)
    augment: str = helpfield("auto (crop-flip for CIFAR/Tiny-ImageNet, none for MNIST-like) | none | crop-flip | crop", default="auto")
    # model
    model: str = helpfield("mlp | cnn | resnet18 | wrn", default="mlp")
    hidden: tuple[int, ...] = helpfield("MLP hidden widths", default=(256, 256))
    nf: int = helpfield("ResNet-18 base width (64 full, 20 reduced); small CNN: nf/2, nf, 2nf wide", default=64)
    width: int = helpfield("WideResNet width factor", default=2)
    depth: int = helpfield("WideResNet depth", default=22)
    # optimisation
    optimizer: str = helpfield("sgd | adam | adamw", default="sgd")
    lr: float = helpfield("learning rate", default=0.03)
    momentum: float = helpfield("SGD momentum", default=0.0)
    nesterov: bool = helpfield("SGD Nesterov momentum", default=False)
    weight_decay: float = helpfield("weight decay (decoupled for adamw)", default=0.0)
    lr_schedule: str = helpfield("constant | cosine | step (restarted at every task)", default="constant")
    lr_step_epochs: tuple[int, ...] = helpfield("epochs (within a task) where the step schedule multiplies lr by lr_gamma", default=())
    lr_gamma: float = helpfield("step schedule factor", default=0.1)
    epochs: int = helpfield("epochs per task", default=1)
    batch_size: int = helpfield("minibatch size (32 as in mammoth/SparCL: enough steps per epoch on small "
                                "sets, and sparse layers learn within 3 points of dense, benchmarks/RESULTS.md)",
                                default=32)
    drop_last: bool = helpfield("drop the last partial batch of an epoch", default=False)
    grad_clip: float | None = helpfield("clip the gradient norm to this value (none: off); sparse layers: norm of the active weights' gradients", default=None)
    # run
    seed: int = helpfield("seed of every generator of the run", default=0)
    device: str = helpfield("auto (cuda when a GPU is available, else cpu; the resolved device is what the run "
                            "records) | cpu | cuda", default="auto")
    threads: int | None = helpfield("torch intra-op threads (none: leave as is)", default=None)
    malloc_reuse: bool = helpfield("keep freed memory for the next step's tensors (glibc: no page faults on "
                                   "fresh pages every step; process-wide, see sparsecl.train.memory)", default=True)
    eval_batch_size: int = helpfield("evaluation batch size", default=1000)
    progress: bool = helpfield("show a progress bar", default=True)
    nproc: int | None = helpfield("data-parallel processes on this machine, started as torchrun would (none: as "
                                  "launched; under torchrun leave it unset); batch_size stays the global batch", default=None)
    debug_sync: bool = helpfield("several processes: compare masks, weights, buffer and every component's state "
                                 "across ranks after every step; stop on the first difference", default=False)
    log: tuple[str, ...] = helpfield("loggers beside metrics.jsonl, comma-separated: csv, tensorboard, wandb "
                                     "(sparsecl.loggers)", default=())
    # sections
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    sparcl: SparclConfig = field(default_factory=SparclConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        choices("optimizer", self.optimizer, OPTIMIZERS.names())
        choices("lr_schedule", self.lr_schedule, LR_SCHEDULES.names())
        choices("augment", self.augment, AUGMENTS)
        choices("device", self.device, DEVICES)
        if self.device == "auto":
            import torch  # resolved here, so config.yaml and summary.json record the device the run used

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        positive = {"tasks": self.tasks, "epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "nf": self.nf, "width": self.width}
        for name, v in positive.items():
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if not 0 <= self.validation < 1:
            raise ValueError(f"validation must be a fraction in [0, 1), got {self.validation}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer=sgd and momentum > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(self.hidden)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 (or none), got {self.grad_clip}")
        if self.nproc is not None and self.nproc < 1:
            raise ValueError(f"nproc must be >= 1, got {self.nproc}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.lr_schedule == "step" and not self.lr_step_epochs:
            raise ValueError("lr_schedule=step needs lr_step_epochs, e.g. lr_step_epochs=30,60")
        if any(not 0 < e < self.epochs for e in self.lr_step_epochs):
            raise ValueError(f"lr_step_epochs must lie inside (0, epochs={self.epochs}), got {list(self.lr_step_epochs)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        for name in self.log:
            LOGGERS.get(name)  # unknown names fail here, listing the valid ones
        if len(set(self.log)) != len(self.log):
            raise ValueError(f"log names a logger twice: {','.join(self.log)}")
        self.resolve()

    @staticmethod
    def derive_before_build(data: dict[str, Any]) -> list[dict[str, Any]]:
        """What must be derived before the sections are built (``configtools.build`` calls it on the nested
        dict): under ``sparcl.tdm`` an unset ``sparsity.method`` is ``magnitude``, so that the sparsity
        section validates on its own (a bare density below 1 without a method is refused there)."""
        tdm = coerce(data.get("sparcl", {}).get("tdm", False), bool, "sparcl.tdm")
        sp = data.get("sparsity", {})
        if not tdm or sp.get("method", "auto") != "auto":
            return []
        data["sparsity"] = {**sp, "method": "magnitude"}
        return [{"key": "sparsity.method", "given": "auto", "value": "magnitude",
                 "why": "under sparcl.tdm the engine holds a magnitude prune of the initialisation that only TDM changes"}]

    def resolve(self) -> list[dict[str, Any]]:
        """The settings this config derives from others, applied and returned (all of them are kept in
        ``derived``): one ``{"key", "given", "value", "why"}`` per setting changed from what was given. The
        run prints them at its start and records them in summary.json. Idempotent: a resolved config
        derives nothing more."""
        self.derived: list[dict[str, Any]] = getattr(self, "derived", [])
        start = len(self.derived)
        self._resolve_scenario()
        self._resolve_sparsity()
        self._resolve_sparcl()
        return self.derived[start:]

    def _derive(self, key: str, value: Any, why: str, record: bool = True) -> None:
        """Set ``section.field`` to ``value`` (the section re-validates) and record the change."""
        section, name = key.split(".")
        obj = getattr(self, section)
        given = getattr(obj, name)
        if given == value and type(given) is type(value):
            return
        setattr(self, section, dataclasses.replace(obj, **{name: value}))
        if record:
            self.derived.append({"key": key, "given": given, "value": value, "why": why})

    def _resolve_scenario(self) -> None:
        """Task-IL trains as it is tested: the current task's loss over its own classes only (the masked
        head, ``continual.masked_head``; van de Ven & Tolias 2019, "Three scenarios for continual
        learning": the task id is given in training and at test). Class-IL and Domain-IL leave it off."""
        cl = self.continual
        if self.stream != "task-il":
            return
        if "masked_head" not in CL_METHODS.get(cl.method).options:
            raise ValueError(f"stream=task-il trains with a task-masked head, which method {cl.method} does not "
                             "have; use stream=class-il (its summary reports Task-IL accuracy as well)")
        if cl.masked_head is False:
            raise ValueError("stream=task-il trains with a task-masked head: leave masked_head unset (or true); "
                             "stream=class-il trains one unmasked head and still reports Task-IL accuracy")
        self._derive("continual.masked_head", True, "stream=task-il trains with the task-masked head")

    def _resolve_sparcl(self) -> None:
        """SparCL's defaults that depend on other sections, and the combinations that cannot work."""
        sc, sp, cl = self.sparcl, self.sparsity, self.continual
        if sp.method == "lth" and self.tasks > 1:
            raise ValueError("sparsity.method=lth needs tasks=1: it rewinds every weight to its early value between "
                             "pruning rounds, which would erase the tasks trained before")
        if cl.masked_head is None and "masked_head" in CL_METHODS.get(cl.method).options:
            on = sc.tdm or sc.ddr or sc.dgm  # unset and no SparCL part: off, nothing worth reporting
            self._derive("continual.masked_head", on, "SparCL's importance terms are defined on the masked-head "
                         "loss (the release's --use_cl_mask)", record=on)
        if not sc.dgm:
            return
        if SPARSE_METHODS.get(sp.method).needs_dense_grad is not SparseMethod.needs_dense_grad:
            raise ValueError(f"sparcl.dgm cannot run with sparsity.method={sp.method}: DGM zeroes the gradients of "
                             "inactive weights, which that method grows by; use sparcl.tdm (or a method that "
                             "reads no gradients: static, set, magnitude, gmp)")
        sparsity = 1.0 - sp.density
        if sc.dgm_ratio is None:  # the release's g = 0.8 at 75 % sparsity, scaled: drop 20 % of the active gradients
            self._derive("sparcl.dgm_ratio", round(1.0 - 0.8 * sp.density, 4), "1 - 0.8 x sparsity.density: the "
                         "release's g = 0.8 at 75 % sparsity, dropping 20 % of the active gradients at any density")
        elif sc.dgm_ratio <= sparsity:
            raise ValueError(f"sparcl.dgm_ratio={sc.dgm_ratio} <= sparsity {sparsity:g}: g counts over ALL entries, so "
                             f"DGM would keep every active gradient; use g > {sparsity:g} (default: 1 - 0.8 x density)")

    def _resolve_sparsity(self) -> None:
        """Under SparCL's TDM the mask engine holds a magnitude-pruned mask of SparCL's layers that only TDM
        changes; otherwise a density below 1 needs an explicit sparse-training method."""
        sp = self.sparsity
        if sp.lr_scaling == "auto":
            # 1/d (capped); none under a quadratic anchor penalty (see MaskEngine._scale_learning_rates)
            anchored = issubclass(CL_METHODS.get(self.continual.method), AnchoredPenalty)
            self._derive("sparsity.lr_scaling", "none" if anchored else "inverse",
                         "auto: none under a quadratic anchor penalty" if anchored else "auto: 1/d per sparse layer, up to "
                         "an effective step lr x factor / (1 - momentum) of sparsity.lr_max",
                         record=sp.density < 1)  # a dense run has no sparse layer to scale
            sp = self.sparsity
        if self.sparcl.tdm:
            if sp.density >= 1:
                raise ValueError("sparcl.tdm needs a target sparsity: set sparsity.density below 1 (e.g. 0.1 for 90 % sparsity)")
            if sp.method not in ("auto", "magnitude"):
                raise ValueError(f"sparcl.tdm drives the masks itself and cannot run with sparsity.method={sp.method}; "
                                 "leave sparsity.method unset (or magnitude)")
            self._derive("sparsity.method", "magnitude", "under sparcl.tdm the engine holds a magnitude prune of the "
                         "initialisation that only TDM changes")
            self._derive("sparsity.layers", self.sparcl.layers, "TDM sparsifies sparcl.layers")

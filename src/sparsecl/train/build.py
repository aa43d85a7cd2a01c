"""Assemble a run from its config: data, stream, model, optimiser, method, mask engine, components.

This is the only place that turns config strings into objects (through the registries' factories).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sparsecl.config import TrainConfig
from sparsecl.configtools import ConfigError
from sparsecl.continual.base import ContinualMethod, MethodContext
from sparsecl.continual.methods import create_method
from sparsecl.data.dataset import ArrayDataset
from sparsecl.data.registry import load_dataset
from sparsecl.data.stream import Stream, make_stream
from sparsecl.data.transforms import Augment, BatchTransform
from sparsecl.kernels.execution import SparseExecution
from sparsecl.models import create_model
from sparsecl.sparcl.components import build_sparcl
from sparsecl.sparse.engine import MaskEngine
from sparsecl.sparse.filters import select_layers
from sparsecl.sparse.flops import profile_layers
from sparsecl.sparse.methods import SPARSE_METHODS
from sparsecl.sparse.small_dense import match_width, target_param_count
from sparsecl.train.distill import Distillation, build_trained, read_trained
from sparsecl.contract import Pipeline
from sparsecl.train.memory import keep_freed_memory
from sparsecl.train.meters import FlopsMeter
from sparsecl.optim import LrSchedule, make_optimizer
from sparsecl.train.rng import generator

# MNIST-like grey 28x28 sets are trained without augmentation (as in mammoth); colour sets with
# random crop (padding 4) and horizontal flip.
_AUGMENT = {"none": Augment(), "crop-flip": Augment(4, True), "crop": Augment(4, False)}
_NO_AUGMENT_DATASETS = ("fashion-mnist", "mnist", "digits")
VALIDATION_SEED = 0  # the ``validation`` split's draw, independent of the run's seed

# The order in which every moment calls the run's components (``Pipeline`` refuses another order), and why:
PIPELINE_ORDER = (
    "method",     # on_task_start first: the current task (masked head, replay) is set before anyone acts on it;
                  # after_backward: A-GEM projects the whole gradient before DGM drops entries of it
    "execution",  # before_forward: decides, before the forward, whether this step's backward must give dense
                  # weight gradients (asking the engine and TDM), which the CSR layers and the FLOPs meter read
    "distill",    # before_backward: mixes the teacher's soft targets into the loss before anything takes a
                  # gradient of it (TDM's and DGM's current-task gradient is then of the distilled loss)
    "tdm",        # after_backward: reads the dense gradient (inactive weights too, for gradient regrowth) ...
    "ddr",        # (reads logits and labels only: its place among the SparCL parts does not matter)
    "dgm",        # ... before DGM zeroes the dropped entries of it
    "flops",      # after_backward, last: charges the step once the others decided its cost (the gradient split's
                  # extra backward, DGM's gradient densities), before after_step changes any mask
)


@dataclass
class Run:
    cfg: TrainConfig
    dataset: ArrayDataset
    stream: Stream
    transform: BatchTransform
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: LrSchedule
    method: ContinualMethod
    engine: MaskEngine
    flops: FlopsMeter
    components: Pipeline  # named, in PIPELINE_ORDER: the order every moment calls them in
    plan: list[int]  # planned optimizer steps per task (0: the task is not trained on)
    epochs: int  # epochs per task actually run (cfg.epochs times the schedule multiplier)
    execution: SparseExecution  # which sparse layers compute through CSR kernels
    distill: Distillation | None  # knowledge distillation from a teacher (distill.teacher)
    generators: dict[str, torch.Generator] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is available; use device=cpu or device=auto")
    return torch.device(name)


def augment_for(cfg: TrainConfig) -> Augment:
    if cfg.augment == "auto":
        return _AUGMENT["none" if cfg.dataset in _NO_AUGMENT_DATASETS else "crop-flip"]
    return _AUGMENT[cfg.augment]


def build_data(cfg: TrainConfig, device: torch.device) -> tuple[Stream, BatchTransform]:
    """The dataset on ``device``, cut into the configured stream, and its batch transform."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.verify_data)
    if cfg.validation:  # one fixed split for every seed: runs that differ in seed tune on the same examples
        ds = ds.holdout(cfg.validation, torch.Generator().manual_seed(VALIDATION_SEED))
    ds = ds.to(device)
    stream = make_stream(cfg.stream, ds, cfg.tasks, cfg.class_order, seed=cfg.seed)
    return stream, BatchTransform(ds.mean, ds.std, augment_for(cfg))


def build_model(cfg: TrainConfig, ds: ArrayDataset, device: torch.device) -> torch.nn.Module:
    """The configured backbone; under ``sparsity.method=small_dense`` its width is scaled so that the dense
    parameter count matches the sparse model's (RigL's Small-Dense baseline)."""
    hidden, nf = cfg.hidden, cfg.nf
    if cfg.sparsity.method == "small_dense":
        hidden, nf = _small_dense_widths(cfg, ds)
    return create_model(cfg.model, ds.input_shape, ds.num_classes, hidden=hidden, nf=nf,
                        width=cfg.width, depth=cfg.depth, generator=generator(cfg.seed, "model")).to(device)


def _small_dense_widths(cfg: TrainConfig, ds: ArrayDataset) -> tuple[tuple[int, ...], int]:
    """(hidden, nf) scaled by the width multiplier whose dense parameter count matches the sparse model."""
    if cfg.model not in ("mlp", "resnet18", "cnn"):
        raise ValueError(f"sparsity.method=small_dense scales the width of mlp (hidden) or resnet18/cnn (nf), "
                         f"not {cfg.model}")

    def widths(m: float) -> tuple[tuple[int, ...], int]:
        if cfg.model == "mlp":
            return tuple(max(1, round(h * m)) for h in cfg.hidden), cfg.nf
        return cfg.hidden, max(1, round(cfg.nf * m))

    def build(m: float) -> torch.nn.Module:
        h, f = widths(m)
        return create_model(cfg.model, ds.input_shape, ds.num_classes, hidden=h, nf=f)

    return widths(match_width(build, target_param_count(build(1.0), cfg.sparsity)))


def build_run(cfg: TrainConfig) -> Run:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.malloc_reuse:
        keep_freed_memory()
    device = resolve_device(cfg.device)
    stream, transform = build_data(cfg, device)
    ds = stream.dataset
    gens = {name: generator(cfg.seed, name, device) for name in ("data", "augment", "method", "sparcl")}
    gens["masks"] = generator(cfg.seed, "masks", "cpu")
    model = build_model(cfg, ds, device)
    optimizer = make_optimizer(model, cfg, _lr_scaled_layers(cfg, model))
    ctx = MethodContext(stream, transform, gens["method"], device)
    method = create_method(cfg.continual.method, model, cfg.continual, ctx)
    _check_buffer_fits(cfg, stream)

    sparsity = cfg.sparsity
    # RigL_Mx trains M times longer; LTH repeats the nominal training once per round
    epochs = cfg.epochs * sparsity.multiplier * SPARSE_METHODS.get(sparsity.method).rounds(sparsity)
    plan = []
    for task in stream.tasks:
        n = method.train_size(task)
        per_epoch = n // cfg.batch_size if cfg.drop_last else -(-n // cfg.batch_size)
        plan.append(epochs * per_epoch)
    engine = MaskEngine(model, optimizer, sparsity, total_steps=max(sum(plan), 1), generator=gens["masks"])

    sparcl = build_sparcl(cfg, model, engine, method, stream, gens["sparcl"], device)
    execution = SparseExecution(model, engine, sparsity.execution, method.forward_batch(cfg.batch_size),
                                consumers=list(sparcl.components.values()))
    flops = FlopsMeter(model, ds.input_shape, engine, grad_density=sparcl.grad_density, flags=execution.flags)
    distill = build_distillation(cfg, ds, device)
    parts = {"method": method, "execution": execution, **({"distill": distill} if distill else {}),
             **sparcl.components, "flops": flops}
    return Run(cfg, ds, stream, transform, model, optimizer, LrSchedule(optimizer, cfg, sparsity.multiplier), method, engine, flops,
               Pipeline(parts, PIPELINE_ORDER), plan, epochs, execution, distill, gens)


def _lr_scaled_layers(cfg: TrainConfig, model: torch.nn.Module) -> list[str]:
    """Weights that get a param group of their own: the sparse layers, when ``sparsity.lr_scaling`` scales
    their learning rates."""
    sp = cfg.sparsity
    if sp.lr_scaling == "none" or not SPARSE_METHODS.get(sp.method).uses_masks:
        return []
    return [s.name for s in select_layers(model, sp.layers, sp.dense_first, sp.dense_last)]


def build_distillation(cfg: TrainConfig, ds: ArrayDataset, device: torch.device) -> Distillation | None:
    """The teacher of ``distill.teacher`` (None when unset); it must have been trained on the same dataset."""
    d = cfg.distill
    if d.teacher is None:
        return None
    tcfg, state = read_trained(d.teacher)
    if tcfg.dataset != cfg.dataset:
        raise ConfigError(f"distill.teacher was trained on {tcfg.dataset}, this run trains on {cfg.dataset}")
    teacher = build_trained(tcfg, state, ds, device)  # the run's own dataset: same one, not loaded again
    flops = sum(layer.macs for layer in profile_layers(teacher, ds.input_shape))
    return Distillation(teacher, d.weight, d.temperature, flops)


def _check_buffer_fits(cfg: TrainConfig, stream: Stream) -> None:
    n = int(stream.dataset.x_train.shape[0])
    if cfg.continual.buffer_size > n:
        raise ValueError(f"buffer_size={cfg.continual.buffer_size} is larger than the {n} training examples of {cfg.dataset}")
    smallest = min(int(t.train_idx.numel()) for t in stream.tasks)
    if cfg.batch_size > smallest and cfg.drop_last:
        raise ValueError(f"batch_size={cfg.batch_size} with drop_last leaves a task of {smallest} examples without any batch")

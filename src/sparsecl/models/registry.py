"""The model registry, the options a builder may read, the ``create_model`` factory and deterministic init.

Only ``create_model`` sees model names. Each registered builder declares which ``ModelOptions`` fields it
reads; an option set to a non-default value that the chosen model does not read is an error, so a typo in
a config (``nf`` given to an MLP) fails instead of being silently ignored.

Initialisation never touches the global RNG when a generator is given: the model is built on the meta
device (no storage, no random draws), materialised with ``to_empty`` and then initialised by
``reset_parameters``, which reproduces PyTorch's default initialisation draw for draw but takes its
randomness from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from sparsecl.registry import Registry

InputShape = tuple[int, int, int]  # (channels, height, width)


def _is_pos_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ModelOptions:
    """Architecture options; each model reads only the fields it declares at registration.

    hidden: MLP hidden widths (784-256-256-10 is ``(256, 256)``; LeNet-300-100 is ``(300, 100)``).
    nf: ResNet-18 base width (64 = the 11.2 M mammoth/SparCL net, 20 = the reduced one).
    width, depth: WideResNet widening factor k and depth d (WRN-d-k; d = 6n + 4).
    """

    hidden: tuple[int, ...] = (256, 256)
    nf: int = 64
    width: int = 2
    depth: int = 22

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, tuple) or not all(_is_pos_int(h) for h in self.hidden):
            raise ValueError(f"hidden must be a tuple of positive ints; got {self.hidden!r}")
        for field in ("nf", "width", "depth"):
            if not _is_pos_int(getattr(self, field)):
                raise ValueError(f"{field} must be a positive int; got {getattr(self, field)!r}")


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ModelOptions))
_DEFAULTS = ModelOptions()

Builder = Callable[[InputShape, int, ModelOptions], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the ``ModelOptions`` fields the builder reads."""

    build: Builder
    options: frozenset[str]


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, *, options: Iterable[str] = ()) -> Callable[[Builder], Builder]:
    """Register ``build(input_shape, num_classes, opts) -> nn.Module`` under ``name``.

    ``options`` names the ``ModelOptions`` fields the builder reads (the others must stay at default).
    """
    declared = frozenset(options)
    if not declared <= OPTION_NAMES:
        raise ValueError(
            f"model {name!r} declares unknown options {sorted(declared - OPTION_NAMES)}; "
            f"valid: {', '.join(sorted(OPTION_NAMES))}"
        )

    def deco(build: Builder) -> Builder:
        MODELS.register(name)(ModelEntry(build=build, options=declared))
        return build

    return deco


def create_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    hidden: tuple[int, ...] = (256, 256),
    nf: int = 64,
    width: int = 2,
    depth: int = 22,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build model ``name`` for inputs ``[B, *input_shape]`` with ``num_classes`` logits, on the CPU.

    With ``generator`` the initial parameters depend on it alone (the global RNG is neither read nor
    advanced); with ``None`` they are drawn from the global RNG exactly as PyTorch's constructors would.
    Raises ``UnknownNameError`` (listing valid names) for an unknown model and ``ValueError`` for bad
    shapes or for an option, set away from its default, that this model does not read.
    """
    entry = MODELS.get(name)
    opts = ModelOptions(hidden=tuple(hidden), nf=nf, width=width, depth=depth)
    _check_unused_options(name, entry, opts)
    _check_io(input_shape, num_classes)
    with torch.device("meta"):  # construct without storage: no default init, no global RNG draws
        model = entry.build(tuple(input_shape), num_classes, opts)
    model.to_empty(device="cpu")
    reset_parameters(model, generator)
    return model


def _check_unused_options(name: str, entry: ModelEntry, opts: ModelOptions) -> None:
    unused = [
        f for f in sorted(OPTION_NAMES - entry.options) if getattr(opts, f) != getattr(_DEFAULTS, f)
    ]
    if unused:
        takes = ", ".join(sorted(entry.options)) or "none"
        raise ValueError(f"model {name!r} does not take option(s) {', '.join(unused)}; it takes: {takes}")


def _check_io(input_shape: tuple[int, ...], num_classes: int) -> None:
    if len(input_shape) != 3 or not all(_is_pos_int(d) for d in input_shape):
        raise ValueError(f"input_shape must be (channels, height, width), positive ints; got {input_shape!r}")
    if not _is_pos_int(num_classes):
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")



# ---------------------------------------------------------------------------------------------------------
# Deterministic initialisation: PyTorch's defaults, drawn from an explicit generator.
# ---------------------------------------------------------------------------------------------------------


def _init_weight_bias(module: nn.Module, generator: torch.Generator | None) -> None:
    """``nn.Linear`` / ``nn.ConvNd.reset_parameters``, same draws in the same order.

    Weight: kaiming_uniform_(a=sqrt(5)), i.e. U(-b, b) with b = gain * sqrt(3 / fan_in) and
    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), so b = 1 / sqrt(fan_in).
    Bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). fan_in = weight[0].numel() (in_features, or
    in_channels / groups * prod(kernel) for a conv), as ``init._calculate_fan_in_and_fan_out`` gives.
    """
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in = module.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def _init_batch_norm(module: nn.Module, generator: torch.Generator | None) -> None:
    """BatchNorm: running mean 0, running var 1, counter 0; affine weight 1, bias 0 (no randomness)."""
    module.reset_running_stats()
    if module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


Initialiser = Callable[[nn.Module, "torch.Generator | None"], None]
_INITIALISERS: tuple[tuple[tuple[type[nn.Module], ...], Initialiser], ...] = (
    ((nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d), _init_weight_bias),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _init_batch_norm),
)


@torch.no_grad()
def reset_parameters(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise every parameter and buffer of ``model`` with PyTorch's default distributions.

    Modules are visited in ``model.modules()`` order (registration order, which is construction order),
    so with ``generator=None`` after ``torch.manual_seed(s)`` the result equals constructing the model
    after ``torch.manual_seed(s)``; with ``torch.Generator().manual_seed(s)`` it is the same values, drawn
    without touching the global RNG. A module owning parameters or buffers of an unsupported type raises
    ``TypeError`` (rather than leaving uninitialised memory behind after ``to_empty``).
    """
    for module in model.modules():
        owns_state = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if not owns_state:
            continue
        init = next((fn for types, fn in _INITIALISERS if isinstance(module, types)), None)
        if init is None:
            supported = ", ".join(t.__name__ for types, _ in _INITIALISERS for t in types)
            raise TypeError(f"no initialiser for {type(module).__name__}; supported: {supported}")
        init(module, generator)
    return model


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, features)``: the model's output and the input of its ``classifier`` (the penultimate
    features iCaRL's exemplar selection and nearest-mean classifier work on), from one forward."""
    seen: list[torch.Tensor] = []
    handle = model.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)

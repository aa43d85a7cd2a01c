"""Backbones behind a registry: ``create_model(name, input_shape, num_classes, ...)``.

Registered names: ``mlp``, ``cnn``, ``resnet18``, ``wrn``. Importing this package registers them (and does
nothing else). Every model maps float ``[B, C, H, W]`` to logits ``[B, num_classes]`` and exposes its last
Linear as ``.classifier``; ResNet-18 and WRN list their residual 3x3 convs with ``residual_conv_names()``,
the MLP its non-classifier Linears with ``hidden_linear_names()``.
"""

from sparsecl.models.registry import (
    MODELS,
    ModelEntry,
    ModelOptions,
    create_model,
    logits_and_features,
    register_model,
    reset_parameters,
)
from sparsecl.models.mlp import MLP
from sparsecl.models.cnn import SmallCNN
from sparsecl.models.resnet import ResNet18
from sparsecl.models.wrn import WideResNet

__all__ = [
    "MODELS",
    "MLP",
    "ModelEntry",
    "ModelOptions",
    "ResNet18",
    "SmallCNN",
    "WideResNet",
    "create_model",
    "logits_and_features",
    "register_model",
    "reset_parameters",
]

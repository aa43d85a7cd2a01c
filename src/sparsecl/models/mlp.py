"""Multi-layer perceptron on flattened images (784-256-256-10, LeNet-300-100, 784-1000-1000-10, ...)."""

from __future__ import annotations

import torch
from torch import nn

from sparsecl.models.registry import InputShape, ModelOptions, register_model


class MLP(nn.Module):
    """Fully connected ReLU network: flatten -> [Linear -> ReLU] x len(hidden) -> Linear (``classifier``).

    LeNet-300-100 is ``hidden=(300, 100)`` (LeCun et al., 1998, "Gradient-based learning applied to
    document recognition"); the 784-100-100-10 / 784-256-256-10 nets are the continual-learning MLPs of
    mammoth (Buzzega et al., 2020, "Dark Experience for General Continual Learning"); 784-1000-1000-10 is
    the MLP of the SET/RigL sparse-training papers (Mocanu et al., 2018; Evci et al., 2020). Deviation: none
    (no dropout; biases on every layer, as in all three).

    Layers: ``hidden.0 .. hidden.{n-1}`` then ``classifier``. ``hidden_linear_names()`` lists the former.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        widths = (in_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # [B, C, H, W] -> [B, C*H*W]
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.classifier(x)

    def hidden_linear_names(self) -> list[str]:
        """Module names of every Linear layer except the classifier (``hidden.0``, ``hidden.1``, ...)."""
        return [f"hidden.{i}" for i in range(len(self.hidden))]


@register_model("mlp", options=("hidden",))
def build_mlp(input_shape: InputShape, num_classes: int, opts: ModelOptions) -> MLP:
    channels, height, width = input_shape
    return MLP(channels * height * width, opts.hidden, num_classes)

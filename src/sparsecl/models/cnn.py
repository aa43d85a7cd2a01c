"""A small two-conv CNN for 28x28 / 32x32 images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.models.registry import InputShape, ModelOptions, register_model


class SmallCNN(nn.Module):
    """conv(32, 3x3) - ReLU - maxpool(2) - conv(64, 3x3) - ReLU - maxpool(2) - Linear(128) - ReLU - Linear.

    The classic two-conv MNIST network of the Keras/PyTorch examples (LeCun et al., 1998 lineage), used in
    sparse-training papers as the "small CNN" baseline. Deviation from the Keras example: the convs use
    padding 1 ("same") and there is no dropout, so a HxW input gives a 64 x floor(floor(H/2)/2) x
    floor(floor(W/2)/2) feature map (28x28 -> 64x7x7 = 3136 features; 32x32 -> 64x8x8 = 4096).

    ``nf`` is the base width: the layers are nf/2, nf and 2 nf wide (rounded, at least 1); the default 64 is
    the network above. Other widths serve RigL's Small-Dense baseline (``sparsity.method=small_dense``).
    """

    def __init__(self, input_shape: InputShape, num_classes: int, nf: int = 64) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height < 4 or width < 4:
            raise ValueError(f"SmallCNN needs inputs of at least 4x4 (two 2x2 pools); got {height}x{width}")
        c1, c2, hidden = max(1, round(nf / 2)), nf, 2 * nf
        self.conv1 = nn.Conv2d(channels, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        # 3x3 convs with padding 1 keep HxW; each max-pool halves it (floor).
        flat = c2 * (height // 2 // 2) * (width // 2 // 2)
        self.fc = nn.Linear(flat, hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc(x.flatten(1)))
        return self.classifier(x)


@register_model("cnn", options=("nf",))
def build_cnn(input_shape: InputShape, num_classes: int, opts: ModelOptions) -> SmallCNN:
    return SmallCNN(input_shape, num_classes, nf=opts.nf)

"""WideResNet-d-k with pre-activation blocks, in the form of RigL's CIFAR-10 experiments (WRN-22-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.models.registry import InputShape, ModelOptions, register_model


class PreActBlock(nn.Module):
    """Pre-activation wide block: a = relu(bn1(x)); out = conv2(relu(bn2(conv1(a)))) + skip.

    skip = x when the width is unchanged, else conv1x1(stride)(a): the projection reads the pre-activated
    input, as in the original WRN code and RigL's ``_residual_block``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        skip = x if self.shortcut is None else self.shortcut(a)
        return out + skip


class WideResNet(nn.Module):
    """WRN-d-k (Zagoruyko & Komodakis, 2016, "Wide Residual Networks"), as in RigL (Evci et al., 2020).

    Stem conv3x3(16); three groups of n = (d - 4) / 6 pre-activation blocks with widths 16k, 32k, 64k
    and first strides 1, 2, 2; final BN + ReLU; global average pool; Linear(64k, num_classes).
    WRN-22-2 (d=22, k=2) is the CIFAR-10 net of RigL's ``cifar_resnet/resnet_model.py``.
    Deviations: no dropout (RigL's TF model applies dropout 0.3 between the two convs of a block; it would
    draw from the global RNG in ``forward``); the stem takes any number of input channels; pooling is
    adaptive (RigL: fixed 8x8 window) so 28x28 and 64x64 inputs work; a block whose width is unchanged
    but whose stride is not cannot occur (strides change only where widths double), so the shortcut is
    chosen on width alone, as in RigL.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 22, width: int = 2) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, n >= 1 (10, 16, 22, 28, ...); got {depth}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        in_planes, groups = 16, []
        for planes, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            first = PreActBlock(in_planes, planes, stride)  # the only block that may change width/size
            groups.append(nn.Sequential(first, *(PreActBlock(planes, planes, 1) for _ in range(n - 1))))
            in_planes = planes
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(64 * width)
        self.classifier = nn.Linear(64 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = torch.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # [B, 64k, h, w] -> [B, 64k]
        return self.classifier(out)

    def residual_conv_names(self) -> list[str]:
        """Module names of the 3x3 convs inside residual blocks (``block1.0.conv1``, ...; 6n in all).

        The stem conv, the 1x1 shortcut convs, the BatchNorms and the classifier are excluded.
        """
        return [
            f"{name}.{conv}"
            for name, module in self.named_modules()
            if isinstance(module, PreActBlock)
            for conv in ("conv1", "conv2")
        ]


@register_model("wrn", options=("depth", "width"))
def build_wrn(input_shape: InputShape, num_classes: int, opts: ModelOptions) -> WideResNet:
    return WideResNet(input_shape[0], num_classes, depth=opts.depth, width=opts.width)

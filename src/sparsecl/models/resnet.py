"""ResNet-18 in the CIFAR form of mammoth and SparCL (3x3 stem, no max-pool, base width ``nf``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.models.registry import InputShape, ModelOptions, register_model


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    The shortcut is the identity, or conv1x1(stride) + BatchNorm when the stride or width changes
    (He et al., 2016, option B).
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016, "Deep Residual Learning for Image Recognition"), CIFAR variant.

    As in mammoth's ``resnet18(nclasses, nf)`` (Buzzega et al., 2020), which SparCL (Wang et al., 2022,
    "SparCL: Sparse Continual Learning on the Edge") uses: stem conv3x3(stride 1) + BN + ReLU, no max-pool;
    four stages of two BasicBlocks with widths nf, 2nf, 4nf, 8nf and strides 1, 2, 2, 2; global average
    pool; Linear(8nf, num_classes). nf=64 has 11,173,962 parameters for 10 classes; nf=20 is the reduced
    net of GEM/mammoth. Deviations: the stem takes any number of input channels (1 for Fashion-MNIST);
    pooling is adaptive (mammoth's ``avg_pool2d(out, out.shape[2])`` assumes square maps), so any input
    size works (28x28, 32x32, 64x64); the classifier is named ``classifier`` (mammoth: ``linear``).
    """

    def __init__(self, in_channels: int, num_classes: int, nf: int = 64) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, nf)
        self.bn1 = nn.BatchNorm2d(nf)
        widths, strides = (nf, 2 * nf, 4 * nf, 8 * nf), (1, 2, 2, 2)
        in_planes, stages = nf, []
        for planes, stride in zip(widths, strides):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(8 * nf, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # [B, 8nf, h, w] -> [B, 8nf]
        return self.classifier(out)

    def residual_conv_names(self) -> list[str]:
        """Module names of the 3x3 convs inside residual blocks (``layer1.0.conv1``, ...; 16 in all).

        These are the layers SparCL's release sparsifies; the stem conv, the 1x1 shortcut convs, the
        BatchNorms and the classifier are excluded.
        """
        return [
            f"{name}.{conv}"
            for name, module in self.named_modules()
            if isinstance(module, BasicBlock)
            for conv in ("conv1", "conv2")
        ]


@register_model("resnet18", options=("nf",))
def build_resnet18(input_shape: InputShape, num_classes: int, opts: ModelOptions) -> ResNet18:
    return ResNet18(input_shape[0], num_classes, nf=opts.nf)

"""The in-memory form every reader returns: uint8 image tensors plus int64 labels, train and test."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] scaled to [0, 1].

    From each channel's 256-bin histogram h: mean = sum_v h_v v / n, var = sum_v h_v v^2 / n - mean^2
    (exact in float64, and no float copy of the images).
    """
    v = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].flatten(), minlength=256).double()
        mean = float((h * v).sum() / h.sum())
        means.append(mean)
        stds.append(max(float((h * v * v).sum() / h.sum()) - mean * mean, 0.0) ** 0.5)
    return tuple(means), tuple(stds)


class DataError(RuntimeError):
    """A data file is missing, truncated or corrupt. The message is one line naming the file."""


@dataclass
class ArrayDataset:
    """A labelled image dataset held as tensors.

    ``x_*`` are uint8 of shape [N, C, H, W] (grey images have C = 1); ``y_*`` are int64 of shape [N].
    ``mean``/``std`` are the per-channel statistics of the training inputs scaled to [0, 1], used by
    the normalisation transform.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name}: x_{split} must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name}: y_{split} must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{self.name}: {split} labels outside [0, {self.num_classes})")
        if len(self.mean) != self.x_train.shape[1] or len(self.std) != self.x_train.shape[1]:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.x_train.shape[1]})")

    @classmethod
    def from_tensors(cls, name: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                     y_test: torch.Tensor, num_classes: int | None = None) -> "ArrayDataset":
        """Your own data as a dataset: images [N, C, H, W] (or [N, H, W], grey), uint8 or float in [0, 1]
        (stored as round(255 x)), labels 0..K-1 (K = ``num_classes``, default max label + 1). Channel
        mean/std come from the training split."""
        xs = [_as_uint8(name, x) for x in (x_train, x_test)]
        ys = [torch.as_tensor(y).long() for y in (y_train, y_test)]
        k = int(max(int(y.max()) for y in ys if y.numel()) + 1) if num_classes is None else int(num_classes)
        mean, std = channel_stats(xs[0])
        return cls(name, xs[0], ys[0], xs[1], ys[1], k, mean, std)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def holdout(self, fraction: float, generator: torch.Generator) -> "ArrayDataset":
        """A validation dataset: ``fraction`` of each class's training examples (rounded; a class keeps at
        least one training example) become its test split, the rest its training split, both in their
        original order. The statistics ``mean``/``std`` are kept (the protocol's constants), so a
        validation run normalises exactly as the test run does. ``generator`` draws which examples."""
        if not 0 < fraction < 1:
            raise ValueError(f"a validation fraction must be in (0, 1), got {fraction}")
        y = self.y_train.cpu()
        held = torch.zeros(y.numel(), dtype=torch.bool)
        for c in range(self.num_classes):
            idx = (y == c).nonzero().flatten()
            n = min(int(round(fraction * idx.numel())), idx.numel() - 1)
            if n > 0:
                held[idx[torch.randperm(idx.numel(), generator=generator)[:n]]] = True
        held = held.to(self.y_train.device)
        x, y = self.x_train, self.y_train
        return ArrayDataset(self.name, x[~held], y[~held], x[held], y[held], self.num_classes, self.mean, self.std)

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """The same dataset with its tensors on ``device``."""
        return ArrayDataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
            self.mean,
            self.std,
        )


def _as_uint8(name: str, x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point() or x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise DataError(f"{name}: images must be uint8, or float in [0, 1]; got {x.dtype}")
    return (x * 255).round().to(torch.uint8)

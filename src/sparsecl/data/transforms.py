"""Batched, device-side input transforms: no per-sample Python.

Inputs are uint8 [B, C, H, W]; outputs float32 normalised. Random augmentations draw from an explicit
``torch.Generator`` living on the same device as the data, so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Which augmentations the training transform applies."""

    crop_padding: int = 0  # random crop of the original size after zero-padding by this many pixels
    hflip: bool = False  # horizontal flip with probability 1/2

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-example random crop of size (H, W) from x zero-padded by ``padding`` on each side.

    Implemented as one gather: offsets (dy, dx) in [0, 2p] per example, and index grids built by
    broadcasting, so the cost is one padded copy plus one gather for the whole batch.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=x.device)
    rows = (off[0].view(b, 1) + torch.arange(h, device=x.device).view(1, h))  # [B, H]
    cols = (off[1].view(b, 1) + torch.arange(w, device=x.device).view(1, w))  # [B, W]
    wp = w + 2 * padding
    flat = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each example horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class BatchTransform:
    """uint8 -> float32 in [0, 1] -> (train only) augmentation -> normalisation ``(x - mean) / std``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], augment: Augment = Augment()) -> None:
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0, got {std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # x_norm = x_uint8 * (1 / (255 std)) - mean / std: one fused multiply-add per element
        if device not in self._stats:
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            self._stats[device] = (1.0 / (255.0 * std), -mean / std)
        return self._stats[device]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scale_shift(x.device)
        return torch.addcmul(shift, x.float(), scale)

    def train(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training view of a uint8 batch (augmentation happens on uint8, before the float cast)."""
        if self.augment.crop_padding:
            x = random_crop(x, self.augment.crop_padding, generator)
        if self.augment.hflip:
            x = random_hflip(x, generator)
        return self.normalise(x)

    def test(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x)

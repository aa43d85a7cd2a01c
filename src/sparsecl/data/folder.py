"""Bring your own images: a folder per split, a folder per class (torchvision's ImageFolder layout).

    root/train/<class name>/<image file>
    root/test/<class name>/<image file>

``register_image_folder(name, root)`` (``sparsecl.data.registry``) makes it a dataset by name, usable as
``dataset=<name>`` in a config. Needs Pillow (``pip install pillow``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsecl.data.checks import Opener, one_line, read_payload
from sparsecl.data.dataset import DataError
from sparsecl.data.readers import Splits, pillow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def class_folders(split: Path) -> list[str]:
    """The class names of one split: its sub-folders, sorted (label i is the i-th)."""
    names = sorted(p.name for p in split.iterdir() if p.is_dir()) if split.is_dir() else []
    if len(names) < 2:
        raise DataError(f"{split}: expected one sub-folder per class (at least 2), found {len(names)}")
    return names


@dataclass(frozen=True)
class ImageFolderReader:
    """Both splits of an image folder as uint8 tensors. Labels follow the sorted class-folder names of
    ``train`` (``test`` must have the same classes); images are taken in file-name order within a class.
    ``mode`` is Pillow's: "L" gives grey [N, 1, H, W], "RGB" colour [N, 3, H, W]; every image must have
    the size of the first one (no resizing: resize once beforehand, not at every run)."""

    mode: str = "RGB"

    def __call__(self, directory: Path, num_classes: int, opener: Opener = read_payload) -> Splits:
        classes = class_folders(directory / "train")
        if len(classes) != num_classes:
            raise DataError(f"{directory / 'train'}: {len(classes)} class folders, the dataset was registered "
                            f"with {num_classes}")
        if class_folders(directory / "test") != classes:
            raise DataError(f"{directory / 'test'}: its class folders differ from {directory / 'train'}'s")
        size: list[tuple[int, int]] = []
        return Splits(*self.read_split(directory / "train", classes, opener, size),
                      *self.read_split(directory / "test", classes, opener, size))

    def read_split(self, split: Path, classes: list[str], opener: Opener,
                   size: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        image_lib = pillow(f"image folder {split.parent}")
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(f for f in (split / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for path in files:
                try:
                    with image_lib.open(io.BytesIO(opener(path))) as img:
                        arr = np.asarray(img.convert(self.mode))
                except (OSError, ValueError, SyntaxError) as e:
                    raise DataError(f"{path}: bad image: {one_line(e)}") from None
                if not size:
                    size.append(arr.shape[:2])
                if arr.shape[:2] != size[0]:
                    raise DataError(f"{path}: image is {arr.shape[0]}x{arr.shape[1]}, the first one "
                                    f"{size[0][0]}x{size[0][1]}; resize them to one size")
                images.append(arr if arr.ndim == 3 else arr[:, :, None])
                labels.append(label)
        if not images:
            raise DataError(f"{split}: no images ({', '.join(IMAGE_SUFFIXES)})")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(labels, dtype=torch.int64)

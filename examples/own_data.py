"""Bring your own data: tensors (``ArrayDataset.from_tensors``) or an image folder, registered by name.

The same 8x8 digits (scikit-learn's ``load_digits``) reach sparsecl both ways: as tensors, and written as
PNG files in the ImageFolder layout (``root/{train,test}/<class>/<file>``). Both runs see identical data,
so they print identical results. Run: python examples/own_data.py
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

import sparsecl

digits = load_digits()
images = torch.from_numpy((digits.images * 255 / 16).round().astype(np.uint8))  # [N, 8, 8] grey
labels = torch.from_numpy(digits.target).long()
test = torch.arange(len(labels)) % 5 == 0  # every fifth image is a test image
order = torch.argsort(labels, stable=True)  # an image folder lists a class's files together: same order here
split = {"train": order[~test[order]], "test": order[test[order]]}

# 1. tensors
sparsecl.register_dataset("my-digits", sparsecl.ArrayDataset.from_tensors(
    "my-digits", images[split["train"]], labels[split["train"]], images[split["test"]], labels[split["test"]]))

# 2. an image folder
root = Path(tempfile.mkdtemp())
for name, idx in split.items():
    for i in idx.tolist():
        folder = root / name / f"class{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].numpy(), mode="L").save(folder / f"{i:04d}.png")
sparsecl.register_image_folder("digits-png", root, mode="L")

config = {"model": "mlp", "epochs": 10, "augment": "none",
          "sparsity.method": "rigl", "sparsity.density": 0.1, "sparsity.delta_t": 25, "progress": False}
for name in ("my-digits", "digits-png"):
    with tempfile.TemporaryDirectory() as out:
        summary = sparsecl.train(config, out, dataset=name, stream_out=lambda line: None)
    print(f"{name}: density {summary['density']['overall']:.4f}, test accuracy "
          f"{summary['final_avg_acc']['class_il']:.2f}")

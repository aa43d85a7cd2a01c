"""Compression of trained models: sparse checkpoint files, int8 quantisation, low-rank factorisation and
the distillation loss.

* ``format``   -- ``save_compressed`` / ``load_compressed``: pickle-free, checksummed sparse checkpoints.
* ``codecs``   -- how values are stored (raw, fp16, per-channel symmetric int8).
* ``layouts``  -- where they sit (dense, bitmask, delta/plain indices).
* ``quantize`` -- ``quantize_model`` (dynamic-int8, weight-int8) and ``model_size_bytes``.
* ``lowrank``  -- truncated-SVD ``factorize_linear`` / ``factorize_model``.
* ``distill``  -- ``DistillationLoss`` (Hinton et al., 2015).
"""

from sparsecl.export.codecs import (
    channel_scales,
    dequantize_symmetric,
    fake_quantize_per_channel,
    quantize_symmetric,
)
from sparsecl.losses import DistillationLoss
from sparsecl.export.format import ExportError, ExportOptions, load_compressed, save_compressed
from sparsecl.export.lowrank import LowRankLinear, factorize_linear, factorize_model, select_rank
from sparsecl.export.quantize import QUANT_SCHEMES, model_size_bytes, quantize_model

__all__ = [
    "DistillationLoss", "ExportError", "ExportOptions", "LowRankLinear", "QUANT_SCHEMES",
    "channel_scales", "dequantize_symmetric", "factorize_linear", "factorize_model",
    "fake_quantize_per_channel", "load_compressed", "model_size_bytes", "quantize_model",
    "quantize_symmetric", "save_compressed", "select_rank",
]

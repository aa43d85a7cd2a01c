"""Post-training int8 quantisation of a trained (sparse) model; returns a new model, the original untouched.

Schemes (``QUANT_SCHEMES``):

* ``dynamic-int8`` -- every ``nn.Linear`` becomes ``torch.ao.nn.quantized.dynamic.Linear`` through
  ``torch.ao.quantization.quantize_dynamic`` (checked: present and working in torch 2.13 CPU, x86/fbgemm
  engine, though deprecated in favour of torchao, which is not installed here). Weights are int8 with a
  symmetric per-output-channel scale; activations are quantised per batch at run time from their observed
  range and the matmul runs in int8 (Jacob et al., 2018, "Quantization and Training of Neural Networks
  for Efficient Integer-Arithmetic-Only Inference"). Conv layers get the weight fake-quantisation below
  (torch has no dynamic conv). The result is a CPU, inference-only model.
* ``weight-int8`` -- weight-only: every ``nn.Linear`` / ``nn.Conv{1,2,3}d`` weight W is replaced by
  W^ = q * s_c with s_c = max |W[c]| / 127 and q = round(W / s_c) (``codecs.fake_quantize_per_channel``),
  so |W - W^| <= s_c / 2; compute stays fp32 on the model's device and the state_dict keeps its keys.

In both schemes a zero weight quantises to exactly 0 (symmetric grid), so sparsity masks survive.
Biases and normalisation layers are not quantised. The on-disk int8 size of a fake-quantised model is
what ``save_compressed(..., values="int8")`` writes: it re-quantises W^ to the same q (its max is 127 s_c).
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Callable

import torch
from torch import nn

from sparsecl.export.codecs import fake_quantize_per_channel
from sparsecl.registry import Registry

QUANT_SCHEMES: Registry[Callable[[nn.Module], nn.Module]] = Registry("quantisation scheme")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fake_quantize_weights(model: nn.Module, types: tuple[type[nn.Module], ...]) -> nn.Module:
    """In place: W <- dq(q(W)) per output channel for every module of ``types``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, types):  # weight [C_out, ...] in every one of these
                module.weight.copy_(fake_quantize_per_channel(module.weight))
    return model


@QUANT_SCHEMES.register("weight-int8")
def _weight_int8(model: nn.Module) -> nn.Module:
    return _fake_quantize_weights(model, (nn.Linear, *_CONV))


@QUANT_SCHEMES.register("dynamic-int8")
def _dynamic_int8(model: nn.Module) -> nn.Module:
    model = _fake_quantize_weights(model.cpu(), _CONV)
    with warnings.catch_warnings():  # torch.ao.quantization warns that torchao supersedes it
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated",
                                category=DeprecationWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def quantize_model(model: nn.Module, scheme: str = "dynamic-int8") -> nn.Module:
    """A quantised copy of ``model`` in eval mode (``QUANT_SCHEMES``: dynamic-int8, weight-int8)."""
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"unknown quantisation scheme {scheme!r}; valid: {', '.join(QUANT_SCHEMES.names())}")
    return QUANT_SCHEMES.get(scheme)(copy.deepcopy(model).eval())


def model_size_bytes(model: nn.Module | dict) -> int:
    """Bytes of ``torch.save(state_dict)``: the size of the model's own (torch-native) checkpoint.

    Dynamic int8 Linear layers count as their packed int8 weights; fake-quantised weights are still
    fp32 tensors and count as such (their int8 file size is what ``save_compressed`` returns).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes

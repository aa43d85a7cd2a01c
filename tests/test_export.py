"""Compressed checkpoints (exact layouts, bit-exact fp32 round trips, sizes, corruption, atomic writes),
low-rank factorisation (Eckart-Young) and the distillation loss (hand computation)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecl.export import (
    DistillationLoss,
    ExportError,
    LowRankLinear,
    channel_scales,
    factorize_linear,
    factorize_model,
    load_compressed,
    save_compressed,
    select_rank,
)
from sparsecl.export.layouts import INDEX_CODES, LAYOUTS, index_stream
from sparsecl.models import create_model, reset_parameters
from datafiles import resign_export

PREAMBLE = struct.Struct("<8sIQ32s")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparse_mlp_state(density: float = 0.1) -> dict[str, torch.Tensor]:
    """784-1000-1000-10 MLP; every weight keeps exactly ``density`` of its entries (+0.0 elsewhere)."""
    g = _gen(0)
    state = create_model("mlp", (1, 28, 28), 10, hidden=(1000, 1000), generator=g).state_dict()
    for key, w in state.items():
        if w.dim() >= 2:
            keep = torch.randperm(w.numel(), generator=g)[: round(density * w.numel())]
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[keep] = True
            state[key] = torch.where(mask.view_as(w), w, torch.zeros_like(w))
    return state


@pytest.fixture(scope="module")
def mlp_state() -> dict[str, torch.Tensor]:
    return _sparse_mlp_state()


@pytest.fixture(scope="module")
def torch_save_size(mlp_state: dict[str, torch.Tensor]) -> int:
    buf = io.BytesIO()
    torch.save(mlp_state, buf)
    return buf.getbuffer().nbytes


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _header(path: Path) -> tuple[dict, int]:
    """(parsed header, payload size) of a written file."""
    data = path.read_bytes()
    _, _, hlen, _ = PREAMBLE.unpack_from(data)
    return json.loads(data[PREAMBLE.size:PREAMBLE.size + hlen]), len(data) - PREAMBLE.size - hlen


def _rewrite_header(path: Path, mutate) -> None:
    """Apply ``mutate`` to the header and re-sign it: a well-formed checksum over a malformed header."""
    path.write_bytes(resign_export(path.read_bytes(), mutate))


# ---------------------------------------------------------------- layouts on tiny tensors


def test_bitmask_layout_exact_bytes() -> None:
    flat = torch.tensor([0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0])
    packed = LAYOUTS.create("bitmask").encode(flat)
    assert packed.arrays["mask"].tolist() == [0b01000000, 0b10000000]  # MSB first, padding bits 0
    assert packed.arrays["values"].tolist() == [1.5, -2.0]
    assert torch.equal(LAYOUTS.create("bitmask").decode(packed.arrays, 10, 2, {}), flat)


def test_delta8_escape_codes() -> None:
    flat = torch.zeros(1000)
    flat[[0, 300, 301]] = torch.tensor([1.0, 2.0, 3.0])
    packed = LAYOUTS.create("indices").encode(flat)
    # skipped zeros d = [0, 299, 0]; 299 = 1 * 255 + 44 -> one escape (255) then 44: 4 bytes < plain16's 6
    assert packed.fields == {"index_code": "delta8"}
    assert packed.arrays["index"].dtype == torch.uint8
    assert packed.arrays["index"].tolist() == [0, 255, 44, 0]
    assert torch.equal(LAYOUTS.create("indices").decode(packed.arrays, 1000, 3, packed.fields), flat)


def test_plain_indices_win_when_the_gap_needs_an_escape() -> None:
    flat = torch.zeros(65536)
    flat[65535] = 1.0
    packed = LAYOUTS.create("indices").encode(flat)
    # d = 65535: delta8 = 257 escapes + 1 code, delta16 = 1 escape + 1 code (4 bytes), plain16 = 2 bytes
    assert packed.fields == {"index_code": "plain16"}
    assert packed.arrays["index"].dtype == torch.uint16 and packed.arrays["index"].tolist() == [65535]


@pytest.mark.parametrize("code", INDEX_CODES)
def test_every_index_code_decodes(code: str) -> None:
    numel = 65_536 if code == "plain16" else 200_000
    idx = torch.tensor([0, 300, 70_000, 70_001, 199_999])  # gaps past the uint8 and uint16 escapes
    idx = idx[idx < numel]
    flat = torch.zeros(numel)
    flat[idx] = torch.arange(1, idx.numel() + 1, dtype=torch.float32)
    arrays = {"index": index_stream(idx, code), "values": flat[idx]}
    out = LAYOUTS.create("indices").decode(arrays, numel, idx.numel(), {"index_code": code})
    assert torch.equal(out, flat)
    if code == "plain16":
        with pytest.raises(ValueError, match="does not fit plain16"):
            index_stream(torch.tensor([65_536]), code)


@pytest.mark.parametrize("layout", ["dense", "bitmask", "indices"])
@pytest.mark.parametrize("numel", [0, 1, 8, 9, 1000, 70000])
@pytest.mark.parametrize("density", [0.0, 0.003, 0.1, 1.0])
def test_layouts_round_trip_bit_exactly(layout: str, numel: int, density: float) -> None:
    g = _gen(numel)
    flat = torch.randn(numel, generator=g) * (torch.rand(numel, generator=g) < density)
    flat = flat + 0.0  # w * 0 leaves -0.0 for negative w; + 0.0 makes it +0.0 (see the -0.0 test)
    packed = LAYOUTS.create(layout).encode(flat)
    out = LAYOUTS.create(layout).decode(packed.arrays, numel, packed.arrays["values"].numel(), packed.fields)
    assert torch.equal(_bits(out), _bits(flat))


# ---------------------------------------------------------------- the 90 %-sparse MLP


@pytest.mark.parametrize("fmt", ["bitmask", "indices", "dense"])
def test_fp32_round_trip_is_bit_exact(tmp_path: Path, mlp_state: dict, fmt: str) -> None:
    path = tmp_path / "mlp.spcl"
    size = save_compressed(mlp_state, path, fmt=fmt, meta={"run": "r1", "density": 0.1})
    assert size == path.stat().st_size
    state, meta = load_compressed(path)
    assert list(state) == list(mlp_state)
    for key, value in mlp_state.items():
        assert state[key].dtype == value.dtype and torch.equal(_bits(state[key]), _bits(value)), key
    assert meta["run"] == "r1" and meta["density"] == 0.1
    info = meta["export"]
    assert (info["fmt"], info["values"], info["lossy"]) == (fmt, "fp32", False)
    sparse = "dense" if fmt == "dense" else fmt
    assert info["tensors"]["hidden.0.weight"]["layout"] == sparse
    assert info["tensors"]["hidden.0.bias"]["layout"] == "dense"  # a dense tensor stays dense
    assert info["tensors"]["hidden.1.weight"]["nnz"] == (100_000 if fmt != "dense" else 1_000_000)


def test_bitmask_fp32_size_is_exact_and_about_a_seventh(tmp_path: Path, mlp_state: dict,
                                                        torch_save_size: int) -> None:
    path = tmp_path / "mlp.spcl"
    size = save_compressed(mlp_state, path, fmt="bitmask")
    expected = sum(math.ceil(w.numel() / 8) + 4 * round(0.1 * w.numel()) if w.dim() >= 2 else 4 * w.numel()
                   for w in mlp_state.values())
    assert _header(path)[1] == expected  # numel/8 mask bytes + 4 bytes per nonzero; biases dense
    assert 7.0 < torch_save_size / size < 8.0


def test_indices_use_one_byte_gaps_at_90_percent_sparsity(tmp_path: Path, mlp_state: dict) -> None:
    path = tmp_path / "mlp.spcl"
    save_compressed(mlp_state, path, fmt="indices", values="int8")
    tensors = load_compressed(path)[1]["export"]["tensors"]
    for key in ("hidden.0.weight", "hidden.1.weight", "classifier.weight"):
        assert tensors[key]["index_code"] == "delta8", key


@pytest.mark.parametrize("fmt", ["bitmask", "indices"])
def test_int8_is_at_least_12x_smaller_than_dense_torch_save(tmp_path: Path, mlp_state: dict,
                                                            torch_save_size: int, fmt: str) -> None:
    size = save_compressed(mlp_state, tmp_path / "mlp.spcl", fmt=fmt, values="int8")
    assert torch_save_size / size >= 12.0


def test_int8_reload_is_dequantised_fp32_within_half_a_step(tmp_path: Path, mlp_state: dict) -> None:
    path = tmp_path / "mlp.spcl"
    save_compressed(mlp_state, path, fmt="indices", values="int8")
    state, meta = load_compressed(path)
    assert meta["export"]["lossy"] and meta["export"]["values"] == "int8"
    for key, w in mlp_state.items():
        assert state[key].dtype == torch.float32, key
        if w.dim() < 2:  # biases stay exact (format.py: deviation from per-tensor int8)
            assert meta["export"]["tensors"][key]["codec"] == "raw" and torch.equal(state[key], w), key
            continue
        assert meta["export"]["tensors"][key]["codec"] == "int8"
        err = (state[key] - w).abs().amax(dim=1)
        assert bool((err <= channel_scales(w) * (0.5 + 1e-5)).all()), key
        assert bool((state[key][w == 0] == 0).all()), key
    model = create_model("mlp", (1, 28, 28), 10, hidden=(1000, 1000), generator=_gen(1))
    model.load_state_dict(state)  # any plain model loads an int8 export


def test_fp16_reload_within_half_precision(tmp_path: Path, mlp_state: dict) -> None:
    path = tmp_path / "mlp.spcl"
    save_compressed(mlp_state, path, fmt="bitmask", values="fp16")
    state, meta = load_compressed(path)
    assert meta["export"]["tensors"]["hidden.0.bias"]["codec"] == "fp16"
    for key, w in mlp_state.items():
        # round to nearest: relative 2^-11 in the normal range, absolute 2^-25 among subnormals
        assert bool(((state[key] - w).abs() <= w.abs() * 2**-11 + 2**-25).all()), key


def test_fp16_overflow_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'w'.*overflows fp16"):
        save_compressed({"w": torch.tensor([[1.0, 7e4]])}, tmp_path / "x.spcl", values="fp16")


# ---------------------------------------------------------------- dtypes, BN, odd values


def test_bn_model_round_trips_with_non_float_tensors_as_is(tmp_path: Path) -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))
    model.to_empty(device="cpu")
    reset_parameters(model, _gen(2))
    model[1].running_var.copy_(torch.rand(8, generator=_gen(3)))
    model[1].num_batches_tracked.fill_(7)
    extra = {"flags": torch.tensor([True, False, True]), "ids": torch.arange(5, dtype=torch.int32)}
    state = {**model.state_dict(), **extra}
    save_compressed(state, tmp_path / "bn.spcl", values="int8")
    loaded, meta = load_compressed(tmp_path / "bn.spcl")
    for key in ("1.num_batches_tracked", "flags", "ids", "1.running_var", "1.weight"):
        assert loaded[key].dtype == state[key].dtype and torch.equal(loaded[key], state[key]), key
        assert meta["export"]["tensors"][key]["codec"] == "raw", key
    assert meta["export"]["tensors"]["0.weight"]["codec"] == "int8"


def test_negative_zero_and_nan(tmp_path: Path) -> None:
    w = torch.zeros(4, 16)
    w[0, 0], w[1, 1], w[2, 2] = -0.0, float("nan"), -1.5
    save_compressed({"w": w}, tmp_path / "z.spcl", fmt="bitmask")
    state, meta = load_compressed(tmp_path / "z.spcl")
    assert meta["export"]["tensors"]["w"] == {"layout": "bitmask", "codec": "raw", "nnz": 2}  # NaN, -1.5
    assert torch.equal(_bits(state["w"]), _bits(w + 0.0))  # the sparse -0.0 comes back as +0.0 ...
    save_compressed({"w": w}, tmp_path / "z.spcl", fmt="dense")
    assert torch.equal(_bits(load_compressed(tmp_path / "z.spcl")[0]["w"]), _bits(w))  # ... dense keeps -0.0
    with pytest.raises(ValueError, match="'w'.*inf/NaN"):
        save_compressed({"w": w}, tmp_path / "n.spcl", values="int8")


def test_bad_options_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "x.spcl"
    with pytest.raises(ValueError, match="unknown fmt 'csr'; valid: bitmask, dense, indices"):
        save_compressed({}, path, fmt="csr")
    with pytest.raises(ValueError, match="unknown values 'int4'; valid: fp16, fp32, int8"):
        save_compressed({}, path, values="int4")
    with pytest.raises(ValueError, match="reserved"):
        save_compressed({}, path, meta={"export": 1})
    with pytest.raises(ValueError, match="JSON"):
        save_compressed({}, path, meta={"when": object()})
    with pytest.raises(ValueError, match="'m'"):
        save_compressed({"m": [1, 2]}, path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- corruption


@pytest.fixture()
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.spcl"
    w = torch.randn(16, 32, generator=_gen(4)) * (torch.rand(16, 32, generator=_gen(5)) < 0.1)
    save_compressed({"w": w + 0.0, "b": torch.ones(16)}, path, fmt="indices")
    return path


def _assert_one_line_error(path: Path, match: str) -> None:
    with pytest.raises(ExportError, match=match) as info:
        load_compressed(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _edit(path: Path, fn) -> None:
    path.write_bytes(fn(bytearray(path.read_bytes())))


def test_bad_magic(small_file: Path) -> None:
    _edit(small_file, lambda b: b"PK\x03\x04" + b[4:])
    _assert_one_line_error(small_file, "not a sparsecl compressed checkpoint")


def test_unsupported_version(small_file: Path) -> None:
    _edit(small_file, lambda b: b[:8] + struct.pack("<I", 2) + b[12:])
    _assert_one_line_error(small_file, "format version 2 is not supported")


@pytest.mark.parametrize("keep", [0, 30, 100, -1])
def test_truncated(small_file: Path, keep: int) -> None:
    _edit(small_file, lambda b: b[:keep])
    _assert_one_line_error(small_file, "truncated")


def test_trailing_bytes(small_file: Path) -> None:
    _edit(small_file, lambda b: b + b"\0")
    _assert_one_line_error(small_file, "1 unexpected bytes after the payload")


def test_flipped_payload_byte(small_file: Path) -> None:
    def flip(b: bytearray) -> bytearray:
        b[-5] ^= 0x01
        return b

    _edit(small_file, flip)
    _assert_one_line_error(small_file, "payload sha256 mismatch")


def test_flipped_header_byte(small_file: Path) -> None:
    def flip(b: bytearray) -> bytearray:
        b[PREAMBLE.size + 3] ^= 0x20
        return b

    _edit(small_file, flip)
    _assert_one_line_error(small_file, "header sha256 mismatch")


@pytest.mark.parametrize("mutate, match", [
    (lambda h: h["tensors"][0].update(nnz=h["tensors"][0]["nnz"] + 1), "array 'values' is float32"),
    (lambda h: h["tensors"][0]["arrays"][0].__setitem__(2, 10**6), "runs past the end"),
    (lambda h: h["tensors"][0].update(codec="zstd"), "unknown value codec 'zstd'"),
    (lambda h: h["tensors"][0].update(dtype="object"), "unknown dtype 'object'"),
    (lambda h: h["tensors"][0].update(shape=[16, -32]), "bad shape"),
    (lambda h: h["tensors"][0]["fields"].update(index_code="delta7"), "unknown index code 'delta7'"),
    (lambda h: h["tensors"].pop(), "bytes not claimed by any tensor"),
    (lambda h: h.pop("payload_bytes"), r"malformed header \(payload_bytes None\)"),
])
def test_malformed_but_signed_header(small_file: Path, mutate, match: str) -> None:
    _rewrite_header(small_file, mutate)
    _assert_one_line_error(small_file, match)


# ---------------------------------------------------------------- atomic write


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpt.spcl"
    save_compressed({"w": torch.ones(3)}, path)
    old = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_compressed({"w": torch.zeros(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.spcl"] and path.read_bytes() == old
    with pytest.raises(OSError, match="disk full"):
        save_compressed({"w": torch.zeros(3)}, tmp_path / "new.spcl")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.spcl"]


# ---------------------------------------------------------------- low-rank


def _linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    with torch.device("meta"):
        layer = nn.Linear(n_in, n_out)
    layer.to_empty(device="cpu")
    reset_parameters(layer, _gen(seed))
    return layer


def test_full_rank_reproduces_the_layer() -> None:
    layer = _linear(12, 8, seed=6)
    x = torch.randn(5, 12, generator=_gen(7))
    for factored in (factorize_linear(layer, rank=8), factorize_linear(layer, energy=1.0)):
        assert isinstance(factored, LowRankLinear) and factored.rank == 8
        assert factored[0].bias is None and torch.equal(factored[1].bias, layer.bias)
        assert torch.allclose(factored(x), layer(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_rank_r_error_is_the_dropped_spectrum(rank: int) -> None:
    layer = _linear(10, 7, seed=8)
    w = layer.weight.detach().double()
    s = torch.linalg.svdvals(w)
    factored = factorize_linear(layer, rank=rank)
    approx = factored[1].weight.detach().double() @ factored[0].weight.detach().double()
    # Eckart-Young: ||W - W_r||_F^2 = sum_{i > r} s_i^2, the least of any rank-r matrix
    assert math.isclose(float(((w - approx) ** 2).sum()), float((s[rank:] ** 2).sum()), rel_tol=1e-5)
    assert int(torch.linalg.matrix_rank(approx)) == rank


def test_select_rank_from_energy() -> None:
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative energy: 16/30, 25/30, 29/30, 30/30
    assert [select_rank(s, e) for e in (0.5, 16 / 30, 0.8, 0.84, 0.97, 1.0)] == [1, 1, 2, 3, 4, 4]
    assert select_rank(torch.zeros(3), 0.9) == 1
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        select_rank(s, 0.0)


def test_factorize_model_replaces_only_layers_that_save_parameters() -> None:
    model = create_model("mlp", (1, 8, 8), 10, hidden=(40, 40), generator=_gen(9))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    small = factorize_model(model, rank_ratio=0.25, min_features=16)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # no global RNG draws
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    # hidden.0: 64 -> 40, r = ceil(0.25 * 40) = 10, 10 * 104 < 2560; hidden.1: r = 10, 800 < 1600;
    # classifier: min(40, 10) = 10 < min_features
    assert [type(m).__name__ for m in small.hidden] == ["LowRankLinear", "LowRankLinear"]
    assert small.hidden[0].rank == 10 and type(small.classifier) is nn.Linear
    assert type(factorize_model(model, rank_ratio=1.0, min_features=16).hidden[0]) is nn.Linear  # no saving
    x = torch.rand(3, 1, 8, 8, generator=_gen(10))
    assert torch.allclose(factorize_model(model, energy=1.0, min_features=1)(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        factorize_model(model, rank_ratio=0.5, energy=0.9)


# ---------------------------------------------------------------- distillation


def test_distillation_loss_matches_a_hand_computation() -> None:
    student = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    y = torch.tensor([1, 2])
    t, alpha = 2.0, 0.3

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for z, v, label in zip(student.tolist(), teacher.tolist(), y.tolist()):
        p, q = softmax([a / t for a in v]), softmax([a / t for a in z])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2
        ce += -math.log(softmax(z)[label]) / 2
    loss = DistillationLoss(temperature=t, weight=alpha)(student, teacher, y)
    assert math.isclose(float(loss.detach()), alpha * t * t * kl + (1 - alpha) * ce, rel_tol=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_weight_zero_is_cross_entropy_and_high_temperature_matches_logit_regression() -> None:
    g = _gen(11)
    z = torch.randn(4, 5, generator=g)
    v = torch.randn(4, 5, generator=g)
    z, v = (z - z.mean(1, keepdim=True)).requires_grad_(), v - v.mean(1, keepdim=True)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(DistillationLoss(weight=0.0)(z, v, y), F.cross_entropy(z, y))
    # Hinton et al. sec. 2.1: for T >> |logits|, T^2 dKL/dz ~ (z - v) / C, here / B for the batch mean
    DistillationLoss(temperature=1000.0, weight=1.0)(z, v, y).backward()
    assert torch.allclose(z.grad, (z - v).detach() / (5 * 4), atol=1e-4)


def test_distillation_validation() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match="weight"):
        DistillationLoss(weight=1.5)
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        DistillationLoss()(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))

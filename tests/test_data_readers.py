"""Readers: exact round trips of every real format, one-line errors naming the file, checksums, real data."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import (
    WRITERS,
    idx_bytes,
    py2_pickle,
    write_bytes,
    write_cifar10,
    write_cifar100,
    write_digits,
    write_idx_dataset,
    write_tiny_imagenet,
)

from sparsecl.data.checks import FileSpec, md5_hex
from sparsecl.data.dataset import DataError
from sparsecl.data.readers import MissingDependencyError, safe_unpickle, stratified_test_mask
from sparsecl.data.registry import DATASETS, channel_stats, datasets_report, load_dataset

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def has_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user cache, no $SPARSECL_DATA: only explicit roots and system locations are seen."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("SPARSECL_DATA", raising=False)
    return tmp_path


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def assert_same(ds, written) -> None:
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train.numpy(), written.x_train)
    np.testing.assert_array_equal(ds.y_train.numpy(), written.y_train)
    np.testing.assert_array_equal(ds.x_test.numpy(), written.x_test)
    np.testing.assert_array_equal(ds.y_test.numpy(), written.y_test)


# --- IDX ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_round_trip(tmp_path, name, gz):
    written = write_idx_dataset(tmp_path, n_train=12, n_test=6, gz=gz, seed=3)
    ds = DATASETS.get(name).read(tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    assert_same(ds, written)


def _cut(path: Path, n: int) -> None:
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-n]))


IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
IMAGE_BYTES = 16 + 12 * 28 * 28  # header + 12 images of 28x28

IDX_CORRUPTIONS = {
    "bad magic": (lambda d: write_bytes(d / IMAGES, idx_bytes(np.zeros(12, np.uint8))),
                  IMAGES, "bad magic number 2049 (expected 2051 for IDX images)"),
    "truncated": (lambda d: _cut(d / IMAGES, 5),
                  IMAGES, f"truncated: expected {IMAGE_BYTES} bytes for dims [12, 28, 28], got {IMAGE_BYTES - 5}"),
    "header cut": (lambda d: write_bytes(d / LABELS, b"\x00\x00\x08"),
                   LABELS, "truncated: expected at least 4 bytes, got 3"),
    "count mismatch": (lambda d: write_bytes(d / LABELS, idx_bytes(np.zeros(11, np.uint8))),
                       LABELS, f"count mismatch: 11 labels for 12 images in {IMAGES}"),
    "bad gzip stream": (lambda d: (d / IMAGES).write_bytes((d / IMAGES).read_bytes()[:200]), IMAGES, "bad gzip"),
    "not gzip": (lambda d: (d / IMAGES).write_bytes(b"plain bytes"), IMAGES, "bad gzip"),
    "wrong shape": (lambda d: write_bytes(d / IMAGES, idx_bytes(np.zeros((12, 32, 32), np.uint8))),
                    IMAGES, "wrong shape: images are 32x32, expected 28x28"),
    "label range": (lambda d: write_bytes(d / LABELS, idx_bytes(np.full(12, 10, np.uint8))),
                    LABELS, "label 10 outside [0, 10)"),
    "missing": (lambda d: (d / LABELS).unlink(), LABELS, "missing file (also looked for train-labels-idx1-ubyte)"),
}


@pytest.mark.parametrize("case", list(IDX_CORRUPTIONS))
def test_idx_corruption_is_one_line_error_naming_the_file(tmp_path, case):
    write_idx_dataset(tmp_path, n_train=12, n_test=6)
    corrupt, filename, fragment = IDX_CORRUPTIONS[case]
    corrupt(tmp_path)
    with pytest.raises(DataError) as excinfo:
        DATASETS.get("fashion-mnist").read(tmp_path)
    one_line_error(excinfo, str(tmp_path / filename), fragment)


# --- CIFAR ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [None, 2, 4, 5])  # None: byte-for-byte the Python 2 cPickle layout
def test_cifar10_round_trip(tmp_path, protocol):
    written = write_cifar10(tmp_path, n_per_batch=3, n_test=4, seed=1, protocol=protocol)
    ds = DATASETS.get("cifar10").read(tmp_path)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert_same(ds, written)


def test_cifar10_pixel_layout_is_rgb_planes_of_row_major_rows(tmp_path):
    write_cifar10(tmp_path)
    row = np.arange(3072, dtype=np.int64) % 251  # a recognisable row: value = index mod 251
    entry = {b"data": row.astype(np.uint8)[None], b"labels": [7]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(entry))
    x = DATASETS.get("cifar10").read(tmp_path).x_test[0]
    # channel c, row r, column k is element c*1024 + r*32 + k of the flat row
    assert int(x[0, 0, 1]) == 1 and int(x[0, 1, 0]) == 32 and int(x[1, 0, 0]) == 1024 % 251
    assert int(x[2, 31, 31]) == 3071 % 251


def test_cifar100_round_trip_reads_fine_labels(tmp_path):
    written = write_cifar100(tmp_path, n_train=6, n_test=4, seed=2)
    ds = DATASETS.get("cifar100").read(tmp_path)
    assert ds.num_classes == 100
    assert_same(ds, written)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": []}))
    with pytest.raises(DataError) as excinfo:
        DATASETS.get("cifar10").read(tmp_path)
    one_line_error(excinfo, str(path), "bad pickle: forbidden global", "system")
    assert not marker.exists()


@pytest.mark.parametrize("payload, name", [(pickle.dumps(eval, protocol=2), "__builtin__.eval"),
                                           (pickle.dumps(getattr, protocol=4), "builtins.getattr")])
def test_builtins_in_pickles_are_refused(tmp_path, payload, name):
    with pytest.raises(DataError) as excinfo:
        safe_unpickle(payload, tmp_path / "f")
    one_line_error(excinfo, f"{tmp_path / 'f'}: bad pickle: forbidden global {name}")


CIFAR_CORRUPTIONS = {
    "truncated pickle": (lambda p: p.write_bytes(p.read_bytes()[:500]), "bad pickle: "),
    "not a dict": (lambda p: p.write_bytes(pickle.dumps([1, 2])), "bad pickle: expected a dict, got list"),
    "missing key": (lambda p: p.write_bytes(py2_pickle({b"data": np.zeros((1, 3072), np.uint8)})),
                    "missing key 'labels'"),
    "wrong shape": (lambda p: p.write_bytes(py2_pickle({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]})),
                    "wrong shape: 'data' must be uint8 [N, 3072], got uint8 [2, 3000]"),
    "count mismatch": (lambda p: p.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})),
                       "count mismatch: 1 labels for 2 images"),
    "label range": (lambda p: p.write_bytes(py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]})),
                    "label 10 outside [0, 10)"),
}


@pytest.mark.parametrize("case", list(CIFAR_CORRUPTIONS))
def test_cifar_corruption_is_one_line_error_naming_the_file(tmp_path, case):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    corrupt, fragment = CIFAR_CORRUPTIONS[case]
    corrupt(path)
    with pytest.raises(DataError) as excinfo:
        DATASETS.get("cifar10").read(tmp_path)
    one_line_error(excinfo, str(path), fragment)


# --- Tiny-ImageNet --------------------------------------------------------------------------------------
def _tiny_spec(n_classes: int):
    return dataclasses.replace(DATASETS.get("tiny-imagenet"), num_classes=n_classes)


def test_tiny_imagenet_round_trip(tmp_path):
    pytest.importorskip("PIL")
    written = write_tiny_imagenet(tmp_path, n_classes=4, n_train_per_class=2, n_val=5, seed=4)
    ds = _tiny_spec(4).read(tmp_path)
    assert ds.x_train.shape == (8, 3, 64, 64) and ds.x_test.shape == (5, 3, 64, 64)
    assert ds.y_train.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # sorted wnids, files in name order
    assert_same(ds, written)
    # the decoded pixels are the written ones up to JPEG error (so channels and axes are not permuted)
    for got, src in ((ds.x_train, written.source[0]), (ds.x_test, written.source[1])):
        assert (got.int() - torch.from_numpy(src.copy()).int()).abs().max() <= 3


def test_tiny_imagenet_bad_annotation_and_bad_image(tmp_path):
    pytest.importorskip("PIL")
    write_tiny_imagenet(tmp_path, n_classes=2, n_val=3)
    base = tmp_path / "tiny-imagenet-200"
    notes = base / "val" / "val_annotations.txt"
    good = notes.read_text()
    notes.write_text(good + "val_9.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as excinfo:
        _tiny_spec(2).read(tmp_path)
    one_line_error(excinfo, str(notes), "line 4:")
    notes.write_text(good)
    (base / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError) as excinfo:
        _tiny_spec(2).read(tmp_path)
    one_line_error(excinfo, str(base / "val" / "images" / "val_1.JPEG"), "bad image")


def test_tiny_imagenet_without_pillow_says_how_to_fix(tmp_path, monkeypatch, isolated):
    base = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / "images" / f"{w}_0.JPEG").write_bytes(b"\xff\xd8")
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))
    (base / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\t{wnids[0]}\t0\t0\t1\t1\n")
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # makes `import PIL` fail
    with pytest.raises(MissingDependencyError) as excinfo:
        load_dataset("tiny-imagenet", root=tmp_path, download=False)
    one_line_error(excinfo, "Tiny-ImageNet needs Pillow: pip install pillow")
    row = next(r for r in datasets_report(root=tmp_path) if r["name"] == "tiny-imagenet")
    assert row["status"] == "unreadable: Tiny-ImageNet needs Pillow: pip install pillow"
    assert row["path"] == str(tmp_path)


# --- digits ---------------------------------------------------------------------------------------------
def test_stratified_test_mask_exact_quotas():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    # n_test=5: exact shares 3.0, 1.5, 0.5 -> floors 3, 1, 0; the one left goes to the tie's lower class, 1
    mask = stratified_test_mask(y, 5, torch.Generator().manual_seed(0))
    assert torch.bincount(y[mask], minlength=3).tolist() == [3, 2, 0]
    again = stratified_test_mask(y, 5, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_digits_from_scikit_learn(isolated):
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", download=False)
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert torch.bincount(ds.y_test).tolist() == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
    ref = load_digits()
    y = torch.from_numpy(ref.target.astype(np.int64))
    x = torch.from_numpy(np.round(ref.images * 255 / 16).astype(np.uint8))[:, None]
    test = stratified_test_mask(y, 360, torch.Generator().manual_seed(0))
    assert torch.equal(ds.x_train, x[~test]) and torch.equal(ds.y_train, y[~test])
    assert torch.equal(ds.x_test, x[test]) and torch.equal(ds.y_test, y[test])
    mean, std = channel_stats(ds.x_train)
    naive = ds.x_train.double() / 255
    assert ds.mean == mean and ds.std == std
    assert abs(mean[0] - naive.mean().item()) < 1e-12 and abs(std[0] - naive.std(correction=0).item()) < 1e-12


def test_digits_reader_on_written_file(tmp_path):
    written = write_digits(tmp_path, per_class=40, seed=5)
    spec = dataclasses.replace(DATASETS.get("digits"), reader=dataclasses.replace(DATASETS.get("digits").reader,
                                                                                    n_test=100))
    ds = spec.read(tmp_path)
    test = stratified_test_mask(torch.from_numpy(written.y_train), 100, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(ds.x_train.numpy(), written.x_train[~test.numpy()])
    np.testing.assert_array_equal(ds.y_test.numpy(), written.y_train[test.numpy()])
    assert torch.bincount(ds.y_test).tolist() == [10] * 10


def test_digits_bad_values(tmp_path):
    write_bytes(tmp_path / "digits.csv.gz", b"1,2,x\n")
    with pytest.raises(DataError) as excinfo:
        DATASETS.get("digits").read(tmp_path)
    one_line_error(excinfo, str(tmp_path / "digits.csv.gz"), "not a numeric CSV")
    write_bytes(tmp_path / "digits.csv.gz", ("17," * 64 + "0\n").encode() * 400)
    with pytest.raises(DataError) as excinfo:
        DATASETS.get("digits").read(tmp_path)
    one_line_error(excinfo, "pixel values must be integers in 0..16")


# --- every registered dataset ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS.names())
def test_registered_dataset_contract(tmp_path, isolated, name):
    spec = DATASETS.get(name)
    assert name in WRITERS, "a new dataset needs a writer in tests/datafiles.py"
    assert all(len(d.md5) == 32 and d.urls for d in spec.downloads)
    assert all(len(m) == 32 for f in spec.files for m in (f.md5, f.payload_md5) if m)
    assert spec.mean is None or all(0 < v < 1 for v in spec.mean + spec.std)
    if name == "tiny-imagenet" and not has_pillow():
        pytest.skip("needs Pillow")
    kwargs = {"n_classes": 4} if name == "tiny-imagenet" else {}
    written = WRITERS[name](tmp_path / "data" / name, **kwargs)
    if name == "tiny-imagenet":
        spec = _tiny_spec(4)
    # an explicit root may hold the dataset in root/<name>
    assert spec.find(tmp_path / "data") == tmp_path / "data" / name
    ds = spec.load(tmp_path / "data", download=False, verify=False)
    assert len(ds.mean) == ds.x_train.shape[1] and ds.num_classes == spec.num_classes
    if name == "digits":  # the reader makes the split: compare the union
        assert len(ds.y_train) + len(ds.y_test) == len(written.y_train)
    else:
        assert_same(ds, written)


# --- checksums ------------------------------------------------------------------------------------------
def test_checksums_accept_recompressed_and_gunzipped_copies(tmp_path):
    write_idx_dataset(tmp_path / "a", n_train=4, n_test=2)
    names = [f.path for f in DATASETS.get("fashion-mnist").files]
    raw = {n: gzip.decompress((tmp_path / "a" / n).read_bytes()) for n in names}
    files = tuple(FileSpec(n, md5_hex((tmp_path / "a" / n).read_bytes()), md5_hex(raw[n])) for n in names)
    spec = dataclasses.replace(DATASETS.get("fashion-mnist"), files=files)
    assert spec.inspect(tmp_path / "a")[0] == []
    (tmp_path / "b").mkdir()
    for n in names:  # re-compressed (another gzip header) and gunzipped copies still verify
        (tmp_path / "b" / n).write_bytes(gzip.compress(raw[n], mtime=12345))
        write_bytes(tmp_path / "c" / n[:-3], raw[n])
    assert spec.inspect(tmp_path / "b")[0] == [] and spec.inspect(tmp_path / "c")[0] == []
    changed = bytearray(raw[names[0]])
    changed[-1] ^= 1  # one pixel differs: still parses, fails the checksum
    write_bytes(tmp_path / "b" / names[0], bytes(changed))
    problems, ds = spec.inspect(tmp_path / "b")
    assert ds is not None and len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'b' / names[0]}: checksum mismatch: expected md5 {files[0].md5}")
    assert f"content md5 {md5_hex(bytes(changed))}" in problems[0]


# --- the real Fashion-MNIST from Debian's dataset-fashion-mnist ------------------------------------------
@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists(), reason="needs dataset-fashion-mnist")
def test_real_fashion_mnist(isolated):
    spec = DATASETS.get("fashion-mnist")
    assert spec.find() == DEBIAN_FASHION
    problems, ds = spec.inspect(DEBIAN_FASHION)  # checksums and parsing, each file read once
    assert problems == []
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert ds.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    mean, std = channel_stats(ds.x_train)
    assert abs(mean[0] - spec.mean[0]) < 5e-4 and abs(std[0] - spec.std[0]) < 5e-4

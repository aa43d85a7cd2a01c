"""Bad input gets ONE clear line on stderr and exit code 2; nothing is overwritten or lost."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from sparsecl import cli
from bad_inputs import CASES, FILE_CASES


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("what,args,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(what, args, pattern, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSECL_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc, err = run_cli([*args, "--out", str(tmp_path / "run")] if "--resume" not in args and args[0] == "train" else args, capsys)
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert err.startswith(f"sparsecl {args[0]}: error: ")


@pytest.mark.parametrize("what,build,pattern", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_file_is_one_clear_line_and_nothing_runs(what, build, pattern, capsys, tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.getbasetemp() / "bad_files"  # shared: the trained run is built once
    tmp.mkdir(exist_ok=True)
    monkeypatch.setenv("SPARSECL_DATA", str(tmp / "nodata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    args = build(tmp)
    capsys.readouterr()
    rc, err = run_cli(args, capsys)
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not (tmp / "pwned").exists()


def test_docs_table_lists_every_case():
    table = (Path(__file__).parents[1] / "docs" / "bad_inputs.md").read_text()
    for what, _, _ in CASES + FILE_CASES:
        assert f"| {what} |" in table, what


def test_output_folder_is_never_overwritten_by_accident(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    rc, err = run_cli(["train", "dataset=digits", "progress=false", "--out", str(out)], capsys)
    assert rc == 2 and "holds no sparsecl run" in err
    assert (out / "precious.txt").read_text() == "keep"


def test_truncated_data_file_names_the_file(tmp_path, capsys):
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = tmp_path / "fm"
    shutil.copytree(src, data)
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    rc, err = run_cli(["train", f"data_dir={data}", "download=false", "progress=false", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert "t10k-labels-idx1-ubyte" in err


def test_nan_loss_stops_with_step_and_layer_and_keeps_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = run_cli(["train", "dataset=digits", "progress=false", "lr=1e12", "epochs=3", "tasks=2",
                       "checkpoint.every=1", "--out", str(out)], capsys)
    assert rc == 2, err
    m = re.search(r"loss is (nan|inf) at step (\d+) \(task 0\); first non-finite tensor: output of layer (hidden\.\d|classifier)", err)
    assert m, err
    from sparsecl.train import checkpoint

    ck = checkpoint.load(out)  # the last checkpoint, written before the faulty step, loads
    assert ck["loop"]["step"] == int(m.group(2))
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def _fmnist_copy(tmp_path: Path) -> Path:
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = tmp_path / "fm"
    shutil.copytree(src, data)
    return data


def test_a_file_failing_its_checksum_is_refused_and_a_verified_one_is_not_hashed_again(tmp_path, monkeypatch):
    from sparsecl.data import checks
    from sparsecl.data.dataset import DataError
    from sparsecl.data.registry import load_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = _fmnist_copy(tmp_path)
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one test label changed: a valid file, not the published one
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch.*damaged or not the published"):
        load_dataset("fashion-mnist", data, download=False)
    load_dataset("fashion-mnist", data, download=False, verify=False)  # your own copy: verify_data=false
    shutil.copy(Path("/usr/share/datasets/fashion-mnist") / labels.name, labels)
    load_dataset("fashion-mnist", data, download=False)  # verified, and remembered by size + mtime
    hashed = []
    real_md5 = checks.md5_hex
    monkeypatch.setattr(checks, "md5_hex", lambda b: hashed.append(len(b)) or real_md5(b))
    load_dataset("fashion-mnist", data, download=False)
    assert hashed == []  # no checksum computed the second time
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    load_dataset("fashion-mnist", data, download=False)
    assert hashed and set(hashed) <= {labels.stat().st_size, 10008}  # the touched file (gz, content), only it


def test_a_partial_data_dir_names_the_missing_file_instead_of_falling_back(tmp_path, capsys):
    data = _fmnist_copy(tmp_path)
    (data / "train-labels-idx1-ubyte.gz").unlink()
    rc, err = run_cli(["train", f"data_dir={data}", "progress=false", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{data}/train-labels-idx1-ubyte.gz: missing file: {data} holds part of fashion-mnist" in err

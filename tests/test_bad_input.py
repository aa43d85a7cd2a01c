"""Bad input gets ONE clear line on stderr and exit code 2; nothing is overwritten or lost."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest
import torch

from sparsecl import cli
from bad_inputs import CASES


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


def test_docs_table_lists_every_case():
    table = (Path(__file__).parents[1] / "docs" / "bad_inputs.md").read_text()
    for what, _, _ in CASES:
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

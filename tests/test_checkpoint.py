"""Atomic checkpoints: the previous good one survives a failed or interrupted write."""

from __future__ import annotations

import errno

import pytest
import torch

from sparsecl.train import checkpoint
from sparsecl.train.checkpoint import CheckpointError


def test_save_load_round_trip_and_previous_kept(tmp_path):
    checkpoint.save({"a": torch.arange(3)}, tmp_path)
    checkpoint.save({"a": torch.arange(4)}, tmp_path)
    assert torch.equal(checkpoint.load(tmp_path)["a"], torch.arange(4))
    assert torch.equal(torch.load(tmp_path / checkpoint.PREV, weights_only=False)["a"], torch.arange(3))
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_newest_falls_back_to_previous(tmp_path):
    checkpoint.save({"a": 1}, tmp_path)
    checkpoint.save({"a": 2}, tmp_path)
    (tmp_path / checkpoint.NAME).write_bytes(b"garbage")
    assert checkpoint.load(tmp_path)["a"] == 1


def test_all_corrupt_is_a_clear_error(tmp_path):
    (tmp_path / checkpoint.NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"cannot resume from {tmp_path}: ckpt.pt"):
        checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError, match="has no checkpoint yet .* --overwrite"):
        checkpoint.load(tmp_path / "empty")


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save({"a": 1}, tmp_path)
    real_open = open

    def failing_open(path, mode="r", *a, **kw):
        if "x" in mode and str(path).endswith(".tmp"):
            f = real_open(path, mode, *a, **kw)

            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    f.close()

                def write(self, data):
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Full()
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint .* is intact"):
        checkpoint.save({"a": 2}, tmp_path)
    monkeypatch.undo()
    assert checkpoint.load(tmp_path)["a"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


class _Payload:
    """Unpickling this calls ``os.system``: what a malicious ckpt.pt would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_checkpoint_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format_version": checkpoint.FORMAT_VERSION, "x": _Payload(marker)}, tmp_path / checkpoint.NAME)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load(tmp_path)
    assert not marker.exists()


def test_a_flipped_bit_is_detected_and_the_previous_checkpoint_used_with_a_note(tmp_path):
    checkpoint.save({"w": torch.zeros(1000)}, tmp_path)
    checkpoint.save({"w": torch.ones(1000)}, tmp_path)
    data = bytearray((tmp_path / checkpoint.NAME).read_bytes())
    pos = bytes(data).find(torch.ones(1000).numpy().tobytes())
    assert pos > 0
    data[pos + 100] ^= 0x04  # one bit of one float of the tensor's record
    (tmp_path / checkpoint.NAME).write_bytes(bytes(data))
    notes = []
    state = checkpoint.load(tmp_path, note=notes.append)
    assert torch.equal(state["w"], torch.zeros(1000))
    assert len(notes) == 1 and "CRC-32" in notes[0] and "ckpt.prev.pt" in notes[0]

"""The run folder: one writer at a time, --overwrite only on sparsecl runs, atomic files, clear next steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sparsecl import cli
from sparsecl.configtools import ConfigError
from sparsecl.fileio import atomic_open, atomic_write
from sparsecl.train import runfolder
from sparsecl.train.logging import MetricsLog

TINY = ["dataset=digits", "model=mlp", "hidden=16", "tasks=1", "epochs=1", "batch_size=256", "progress=false"]


def test_a_second_writer_is_refused_with_the_owners_pid(tmp_path):
    with runfolder.RunLock(tmp_path):
        # another process trying the same folder (flock is per open file, so even this process would block)
        code = ("import sys; from sparsecl.train.runfolder import RunLock\n"
                "try:\n    RunLock(sys.argv[1])\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert p.returncode == 3, p.stderr
        assert f"in use by pid {os.getpid()}" in p.stdout
    assert not (tmp_path / runfolder.LOCK).exists()  # released and removed


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / runfolder.LOCK).write_text(json.dumps({"pid": pid, "host": "h"}) + "\n")
    notes = []
    with runfolder.RunLock(tmp_path, note=notes.append):
        assert json.loads((tmp_path / runfolder.LOCK).read_text())["pid"] == os.getpid()
    assert notes == [f"note: took over the lock of {tmp_path} left by pid {pid} on h, which is no longer running"]


def test_overwrite_never_deletes_a_folder_that_is_not_a_sparsecl_run(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    assert cli.main(["train", *TINY, "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds no sparsecl run" in err and len(err.strip().splitlines()) == 1
    assert (out / "holiday.jpg").read_bytes() == b"\xff\xd8"


def test_overwrite_replaces_a_sparsecl_run_and_messages_say_the_one_thing_to_do(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    assert runfolder.state(out) == "finished" and runfolder.is_run(out)
    (out / "stale.txt").write_text("from the old run")
    capsys.readouterr()
    assert cli.main(["train", *TINY, "--out", str(out)]) == 2
    assert "holds a finished run; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["train", *TINY, "seed=1", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["seed"] == 1


def test_a_run_stopped_before_its_first_checkpoint_is_not_sent_in_a_circle(tmp_path, capsys):
    out = tmp_path / "run"
    lock = runfolder.open_new(out, overwrite=False)
    lock.release()  # as if killed during its first task: marker, no checkpoint
    assert cli.main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint; pass --overwrite" in err and "--resume" not in err
    assert cli.main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint yet" in err and "--overwrite" in err
    assert cli.main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0


def test_an_unfinished_run_points_to_resume(tmp_path):
    out = tmp_path / "run"
    runfolder.open_new(out, overwrite=False).release()
    (out / "ckpt.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"continue it with: sparsecl train --resume {out}"):
        runfolder.check_new(out, overwrite=False)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "summary.json"
    atomic_write(p, "old\n")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("half a new fi")
        raise RuntimeError("killed")
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left


def test_metrics_log_resume_never_pads_with_nul_bytes(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for i in range(3):
        log.write({"i": i})
    offset = log.offset()
    assert log.truncate(offset) is None
    data = log.path.read_bytes()
    log.path.write_bytes(data[: len(data) - 4])  # shorter than at the checkpoint, last line torn
    note = log.truncate(offset)
    assert note is not None and "shorter than when the checkpoint was written" in note
    kept = log.path.read_bytes()
    assert b"\x00" not in kept and kept.endswith(b"\n")
    assert [json.loads(line) for line in kept.splitlines()] == [{"i": 0}, {"i": 1}]


def test_a_run_killed_after_its_last_checkpoint_resumes_to_its_summary(tmp_path, capsys):
    """Checkpointed after the last task, killed before summary.json: --resume writes the summary (and the
    final weights) instead of calling the run finished."""
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    before = json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink()
    (out / "final_model.pt").unlink()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    after = json.loads((out / "summary.json").read_text())
    assert after["acc_matrix"] == before["acc_matrix"] and (out / "final_model.pt").is_file()
    assert cli.main(["train", "--resume", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out} is finished (1 of 1 tasks trained)")

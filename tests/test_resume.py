"""Fault injection: a run SIGKILLed anywhere and resumed ends exactly like an uninterrupted one.

A small SparCL-DER++ run (TDM + DDR + DGM, 2 tasks, digits) is killed mid-epoch, mid-checkpoint-write and
at a task boundary; each is resumed (``--resume``) and its summary.json and metrics.jsonl must equal the
uninterrupted run's, apart from timings.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparsecl.train.loop import TIMING_KEYS

DRIVER = Path(__file__).with_name("fault_driver.py")
ARGS = ["dataset=digits", "model=mlp", "hidden=32,32", "tasks=2", "method=derpp", "buffer_size=100",
        "batch_size=32", "replay_batch_size=16", "epochs=3", "lr=0.05", "masked_head=true",
        "sparcl.tdm=true", "sparcl.ddr=true", "sparcl.dgm=true", "sparcl.dgm_ratio=0.95", "sparsity.density=0.2",
        "sparcl.tdm_interval=0.25", "sparcl.tdm_freeze=0.75", "sparcl.ddr_start=0.3", "sparcl.ddr_interval=0.3",
        "sparcl.ddr_removals=2", "sparcl.dgm_interval=7", "checkpoint.every=13", "progress=false", "threads=1", "seed=3"]


def run(kill: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, str(DRIVER), kill, "--", *extra, "--out", str(out)] if "--resume" not in extra
                          else [sys.executable, str(DRIVER), kill, "--", *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def comparable(run_dir: Path) -> tuple[dict, list[dict]]:
    s = json.loads((run_dir / "summary.json").read_text())
    for k in TIMING_KEYS:
        s.pop(k, None)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return s, lines


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = run("none", out, *ARGS)
    assert p.returncode == 0, p.stderr
    return comparable(out)


@pytest.mark.parametrize("kill", ["step:20", "ckpt:3", "task:0", "step:61"])
def test_sigkill_then_resume_is_identical(kill, reference, tmp_path):
    out = tmp_path / "run"
    p = run(kill, out, *ARGS)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    assert not (out / "summary.json").exists()
    p = run("none", out, "--resume", str(out))
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stdout
    got = comparable(out)
    assert got[0] == reference[0]
    assert got[1] == reference[1]


def test_time_based_checkpoints_make_a_first_task_resumable_with_the_same_result(reference, tmp_path):
    """No step-count checkpoints and no task-end checkpoint before the kill: only the wall-clock ones
    (a fake clock of 20 s per step, checkpoint.minutes=1 -> every 3 steps). Killed at step 20 of the first
    task, resumed, the result equals the reference run that checkpointed at other steps."""
    out = tmp_path / "run"
    timed = [a for a in ARGS if not a.startswith("checkpoint.every")] + ["checkpoint.minutes=1"]
    p = run("clock:20,step:20", out, *timed)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    import torch

    assert torch.load(out / "ckpt.pt", weights_only=True)["loop"]["step"] == 18
    p = run("none", out, "--resume", str(out))
    assert p.returncode == 0, p.stderr
    (s, lines), (ref_s, ref_lines) = comparable(out), copy.deepcopy(reference)
    for summary in (s, ref_s):
        summary["config"]["checkpoint"] = None
    assert (s, lines) == (ref_s, ref_lines)


def test_resume_of_unchanged_kill_twice(reference, tmp_path):
    out = tmp_path / "run"
    assert run("step:15", out, *ARGS).returncode == -signal.SIGKILL
    assert run("step:40", out, "--resume", str(out)).returncode == -signal.SIGKILL
    p = run("none", out, "--resume", str(out))
    assert p.returncode == 0, p.stderr
    assert comparable(out) == reference


def test_uninterrupted_run_is_deterministic(reference, tmp_path):
    out = tmp_path / "again"
    assert run("none", out, *ARGS).returncode == 0
    assert comparable(out) == reference


def test_sigterm_checkpoints_exits_cleanly_and_resumes_identically(reference, tmp_path):
    out = tmp_path / "run"
    p = run("term:33", out, *ARGS)
    assert p.returncode == 130, p.stderr
    assert f"stopped by SIGTERM at step 33; checkpoint written; resume with: sparsecl train --resume {out}" in p.stderr
    p = run("none", out, "--resume", str(out))
    assert p.returncode == 0, p.stderr
    assert "at task 1, epoch 2, step 33" in p.stdout
    assert comparable(out) == reference


ICARL = ["dataset=digits", "model=mlp", "hidden=32,32", "tasks=2", "method=icarl", "buffer_size=100",
         "batch_size=32", "epochs=2", "lr=0.05", "sparcl.tdm=true", "sparcl.ddr=true", "sparsity.density=0.3",
         "sparcl.ddr_start=0.3", "sparcl.ddr_interval=0.3", "sparcl.ddr_removals=2", "checkpoint.every=13",
         "progress=false", "threads=1", "seed=3"]


def test_icarl_killed_in_its_second_task_resumes_identically(tmp_path):
    """The frozen network, the exemplars, the class means and DDR's state over exemplar indices (N + j)
    all come back: killed after the first task's exemplars were chosen, the resumed run ends as the
    uninterrupted one."""
    ref = tmp_path / "ref"
    assert run("none", ref, *ICARL).returncode == 0
    out = tmp_path / "run"
    p = run("step:60", out, *ICARL)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    p = run("none", out, "--resume", str(out))
    assert p.returncode == 0, p.stderr
    assert comparable(out) == comparable(ref)

"""Data-parallel training on 2 processes (gloo, CPU, digits, a tiny MLP): identical state on every rank,
equivalence with one process, kill + resume, and the plumbing (sparsecl.distributed).

One torchrun launch runs every 2-process training in turn (tests/ddp_driver.py), rank by rank tracing the
masks and the buffer after every step; the tests then read what it left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsecl.configtools import ConfigError
from sparsecl.distributed import launch
from sparsecl.distributed.check import DivergenceError, check_identical, fingerprint
from sparsecl.distributed.runtime import Dist
from sparsecl.train.loop import TIMING_KEYS

HERE = Path(__file__).parent
BASE = ["dataset=digits", "model=mlp", "hidden=32,32", "batch_size=32", "lr=0.05", "progress=false", "threads=1",
        "seed=3"]
SPARSE = {  # each updates its masks several times within its 45 steps
    m: [f"sparsity.method={m}", "sparsity.density=0.3", "sparsity.delta_t=4", "epochs=1", "lr=0.3"]
    for m in ("rigl", "set", "snfs", "gmp")
}
SPARCL = ["tasks=2", "method=derpp", "buffer_size=100", "replay_batch_size=16", "epochs=2", "masked_head=true",
          "sparcl.tdm=true", "sparcl.ddr=true", "sparcl.dgm=true", "sparcl.dgm_ratio=0.95", "sparsity.density=0.2",
          "sparcl.tdm_interval=0.25", "sparcl.tdm_freeze=0.75", "sparcl.ddr_start=0.3", "sparcl.ddr_interval=0.3",
          "sparcl.ddr_removals=2", "sparcl.dgm_interval=7", "checkpoint.every=13", "nproc=2", "debug_sync=true"]
DENSE64 = ["epochs=1", "method=sgd"]  # float64 (driver option)
# drop_last: the last batch of a task (718 or 719 examples) would be cut 15/14 while its replay draws are
# cut 8/8, so the replay terms would be weighted 15/29 and 14/29 instead of 1/2 (README: exact when the
# batch and replay sizes divide by the world size)
DERPP64 = ["tasks=2", "method=derpp", "buffer_size=100", "replay_batch_size=16", "epochs=1", "drop_last=true"]


def torchrun(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """Every 2-process training of this file, in one launch; returns the folder holding their outputs."""
    root = tmp_path_factory.mktemp("ddp")
    commands = []
    for name, extra in SPARSE.items():
        (root / f"trace-{name}").mkdir()
        commands.append(["--trace", str(root / f"trace-{name}"), "--", *BASE, *extra, "--out", str(root / name)])
    (root / "trace-sparcl").mkdir()
    commands.append(["--trace", str(root / "trace-sparcl"), "--", *BASE, *SPARCL, "--out", str(root / "sparcl")])
    commands.append(["--float64", "--", *BASE, *DENSE64, "--out", str(root / "dense64")])
    commands.append(["--float64", "--", *BASE, *DERPP64, "--out", str(root / "derpp64")])
    commands.append(["--diverge", "4", "--", *BASE, *SPARSE["rigl"], "debug_sync=true", "--out", str(root / "diverge")])
    commands.append(["--term", "7", "--", *BASE, *DENSE64, "--out", str(root / "term")])
    commands.append(["--", *BASE, "tasks=2", "method=xder_ce", "buffer_size=50", "--out", str(root / "xder")])
    args = [a for c in commands for a in (*c, "---")][:-1]
    p = torchrun(HERE / "ddp_driver.py", *args, env={"DDP_DRIVER_CODES": str(root / "codes")})
    assert p.returncode == 0, p.stderr[-3000:]
    (root / "stderr").write_text(p.stderr)
    return root


def codes(root: Path) -> list[int]:
    return [int(c) for c in (root / "codes").read_text().split()]


def one_process(out: Path, *args: str, float64: bool = True) -> None:
    opts = ["--float64"] if float64 else []
    p = subprocess.run([sys.executable, str(HERE / "ddp_driver.py"), *opts, "--", *args, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]


def comparable(run_dir: Path) -> tuple[dict, list[dict]]:
    s = json.loads((run_dir / "summary.json").read_text())
    for k in TIMING_KEYS:
        s.pop(k, None)
    for k in ("per_rank", "summed"):  # per-process timings
        s["distributed"].pop(k)
    return s, [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- state identical on every rank --------------------------------------------------------------------
@pytest.mark.parametrize("name", [*SPARSE, "sparcl"])
def test_masks_identical_on_both_ranks_after_every_step(launched, name):
    traces = [(launched / f"trace-{name}" / f"rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    assert len(traces[0]) >= 45 and traces[0] == traces[1]
    recs = [json.loads(x) for x in traces[0]]
    distinct = {json.dumps(r["masks"], sort_keys=True) for r in recs}
    assert len(distinct) >= 3  # the masks did change, several times (SparCL: TDM's cycles)
    assert codes(launched)[[*SPARSE, "sparcl"].index(name)] == 0


def test_sparcl_buffer_identical_on_both_ranks_and_filled(launched):
    recs = [[json.loads(x)["buffer"] for x in (launched / "trace-sparcl" / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)]
    assert recs[0] == recs[1]
    assert len({json.dumps(b, sort_keys=True) for b in recs[0]}) > 20  # it kept changing
    assert recs[0][-1]["filled"] == "100"


def test_summary_records_world_and_sums_over_ranks(launched):
    s = json.loads((launched / "sparcl" / "summary.json").read_text())
    d = s["distributed"]
    assert (d["world_size"], d["backend"], d["global_batch_size"], d["rank0_batch_size"]) == (2, "gloo", 32, 16)
    assert d["summed"]["train_time_s"] == pytest.approx(sum(d["per_rank"]["train_time_s"]))
    # every example of the global batch counted once (both ranks' shares): the epoch records sum to it
    lines = [json.loads(x) for x in (launched / "sparcl" / "metrics.jsonl").read_text().splitlines()]
    assert s["data_examples"] == sum(r["examples"] for r in lines if r["event"] == "epoch")
    assert s["steps"] == lines[-1]["step"]


def test_debug_sync_stops_on_a_diverged_mask(launched):
    """Rank 1 flips a mask entry after step 4 (the driver); the check after step 5 stops both ranks."""
    assert codes(launched)[-3] == 2
    err = (launched / "stderr").read_text()
    assert "ranks diverged after step 5: engine.masks.hidden.0.weight differs between rank 0 and rank 1" in err


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(launched):
    """SIGTERM reaches rank 1 alone after step 7; the flag travels with step 8's all-reduce, so both ranks
    stop after step 8, rank 0 writes the checkpoint and both exit 130."""
    assert codes(launched)[-2] == 130
    err = (launched / "stderr").read_text()
    assert "stopped by a signal to another rank at step 8; checkpoint written" in err
    from sparsecl.train import checkpoint

    assert checkpoint.load(launched / "term")["loop"]["step"] == 8


def test_xder_is_refused_with_the_reason(launched):
    assert codes(launched)[-1] == 2
    err = (launched / "stderr").read_text()
    assert "method=xder_ce cannot train on several processes: its online logit transplants" in err


# -- equivalence with one process ---------------------------------------------------------------------
@pytest.mark.parametrize("name, args", [("dense64", DENSE64), ("derpp64", DERPP64)])
def test_two_processes_equal_one_process_in_float64(launched, tmp_path, name, args):
    """Same global batch: the reduced gradient is the 1-process gradient up to summation order, so in
    float64 the weights agree to ~1e-16 (tolerance 1e-10) and the accuracies exactly. DER++ too: the
    buffer sees the same candidates, the replay draws are cut like the batch."""
    one_process(tmp_path / "one", *BASE, *args)
    a = torch.load(launched / name / "final_model.pt")
    b = torch.load(tmp_path / "one" / "final_model.pt")
    assert all(v.dtype == torch.float64 for v in a.values())
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-10
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (launched / name, tmp_path / "one"))
    assert sa["acc_matrix"] == sb["acc_matrix"]
    assert sa["examples_processed"] == sb["examples_processed"] and sa["flops"] == sb["flops"]


# -- kill + resume ------------------------------------------------------------------------------------
def test_killed_two_process_run_resumes_bit_identically(launched, tmp_path):
    """SIGKILL of both workers after step 20 (checkpoint at 13); ``sparsecl train --resume`` respawns 2
    processes (nproc=2 in the run's config) and ends exactly as the uninterrupted run."""
    out = tmp_path / "run"
    p = torchrun(HERE / "fault_driver.py", "step:20", "--", *BASE, *SPARCL, "--out", str(out))
    assert p.returncode != 0 and not (out / "summary.json").exists()
    p = subprocess.run([sys.executable, "-m", "sparsecl", "train", "--resume", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" in p.stdout and "step 13" in p.stdout
    assert comparable(out) == comparable(launched / "sparcl")


# -- plumbing -----------------------------------------------------------------------------------------
def test_shard_rule_cuts_in_rank_order_and_weights_sum_to_one():
    world = [Dist(rank=r, world=3) for r in range(3)]
    assert [d.bounds(10) for d in world] == [(0, 4), (4, 7), (7, 10)]
    assert [d.share(10) for d in world] == [0.4, 0.3, 0.3]
    assert [d.bounds(2) for d in world] == [(0, 2)] * 3  # smaller than the world: not cut
    assert [d.share(2) for d in world] == [1 / 3] * 3
    assert Dist().bounds(7) == (0, 7) and Dist().share(7) == 1.0


class _TwoRanks(Dist):
    def __init__(self, other: dict) -> None:
        super().__init__(rank=0, world=2)
        self.other = other

    def gather_object(self, obj):  # noqa: ANN001, ANN201
        return [obj, self.other]


def test_check_identical_names_the_first_difference():
    state = {"engine": {"masks": {"fc.weight": torch.tensor([True, False])}}, "step": 3}
    fp = fingerprint(state)
    assert check_identical(_TwoRanks(fp), state, 5) == fp
    other = fingerprint({"engine": {"masks": {"fc.weight": torch.tensor([False, False])}}, "step": 3})
    with pytest.raises(DivergenceError, match="after step 5: engine.masks.fc.weight differs between rank 0 and rank 1"):
        check_identical(_TwoRanks(other), state, 5)


def test_child_argv_pins_the_output_folder():
    assert launch.child_argv(["train", "nproc=2"], "runs/x") == ["train", "nproc=2", "--out", "runs/x"]
    assert launch.child_argv(["train", "nproc=2", "--out", "a"], "runs/x") == ["train", "nproc=2", "--out", "a"]
    assert launch.child_argv(["train", "--resume", "a"], "a") == ["train", "--resume", "a"]


def test_nproc_must_agree_with_the_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="nproc=3 but the launcher started 2 processes"):
        launch.check_world(3, Dist(world=2))
    launch.check_world(2, Dist(world=2))
    launch.check_world(None, Dist(world=2))


def test_bad_nproc_is_one_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "sparsecl", "train", "nproc=0"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == "sparsecl train: error: nproc must be >= 1, got 0"

"""Every script under examples/ runs (scikit-learn's digits, a few seconds each) and reaches what it prints.

Each example prints its densities and accuracies; the floors below sit a few points under the values the
examples print at one thread (thread count changes float summation order, hence the margin), and far
above what a broken piece would give (chance is 10 %; Class-IL without replay ends near 20 %).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def numbers(text: str, label: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{label} ([0-9.]+)", text)]


def test_every_example_has_a_test():
    tested = {"rigl_own_loop.py", "derpp_own_loop.py", "sparcl_own_loop.py", "train_from_python.py", "own_data.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_rigl_in_a_plain_loop_keeps_90_percent_sparsity_and_learns():
    out = run_example("rigl_own_loop.py")
    assert numbers(out, "density") == [0.1]
    assert numbers(out, "test accuracy")[0] >= 95.0


def test_derpp_replay_in_your_own_loop_remembers_earlier_tasks():
    out = run_example("derpp_own_loop.py")
    with_replay, without = numbers(out, "after 5 tasks")
    assert with_replay >= 60.0
    assert without <= 25.0  # fine-tuning keeps little more than the last task's two classes


def test_sparcl_parts_at_the_named_moments_of_your_own_loop():
    out = run_example("sparcl_own_loop.py")
    assert numbers(out, "density") == [0.1] * 6  # at every task end and at the end
    remaining = [int(v) for v in re.findall(r"trained on (\d+) of", out)]
    full = [int(v) for v in re.findall(r" of (\d+) examples", out)]
    assert all(r == pytest.approx(0.7 * f, abs=3) for r, f in zip(remaining, full, strict=True))  # DDR: 30 % out
    assert numbers(out, "after 5 tasks")[0] >= 75.0


def test_train_from_python_returns_the_summary():
    out = run_example("train_from_python.py")
    assert numbers(out, "density") == [0.1]
    assert numbers(out, "after 5 tasks")[0] >= 75.0


def test_own_tensors_and_an_image_folder_give_the_same_run():
    out = run_example("own_data.py")
    assert numbers(out, "density") == [0.1, 0.1]
    tensors, folder = numbers(out, "test accuracy")
    assert tensors == folder  # identical data through both routes: identical runs
    assert tensors >= 90.0

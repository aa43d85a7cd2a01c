"""Foundation benchmark: dense MLP accuracy on Fashion-MNIST, and the engine's overhead over a bare loop.

* accuracy: MLP 784-256-256-10, single task, 1 epoch, batch 128, SGD lr 0.05 momentum 0.9, 3 seeds;
* throughput: the same training through sparsecl's loop vs a bare PyTorch loop doing the same work (same
  model, batch, uint8 data tensors, gather + normalise + forward + backward + SGD step), interleaved
  repeats, medians; 2 threads. The engine's time is its ``train_time_s`` (evaluation excluded, as the bare
  loop has none).

usage: python benchmarks/bench_foundation.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
from common import bare_sgd_seconds, fmt, mean_std, run_config, table, write_json

RECIPE = ["dataset=fashion-mnist", "model=mlp", "hidden=256,256", "epochs=1", "batch_size=128", "lr=0.05",
          "momentum=0.9", "threads=2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    accs, engine_t, bare_t = [], [], []
    for r in range(args.repeats):  # interleaved so machine load hits both alike
        s = run_config([*RECIPE, f"seed={r % 3}"])
        engine_t.append(s["train_time_s"])
        if r < 3:
            accs.append(s["final_avg_acc"]["class_il"])
        bare_t.append(bare_sgd_seconds([None], 1, 128, 0.05, 0.9, r % 3))
    m, sd = mean_std(accs)
    eng, bare = statistics.median(engine_t), statistics.median(bare_t)
    print("## Dense MLP 784-256-256-10, Fashion-MNIST, 1 epoch, batch 128 (SGD lr 0.05, momentum 0.9)\n")
    print(table(["metric", "value", "target"], [
        ["test accuracy (mean ± std, seeds 0-2)", fmt(m, sd), ">= 84 %: " + ("PASS" if m >= 84 else "FAIL")],
        ["engine train time, median (s)", f"{eng:.2f}", ""],
        ["bare PyTorch loop, median (s)", f"{bare:.2f}", ""],
        ["engine / bare", f"{eng / bare:.3f}", "<= 1.2: " + ("PASS" if eng / bare <= 1.2 else "FAIL")],
    ]))
    print(f"\nall engine times: {[round(t, 2) for t in engine_t]}\nall bare times: {[round(t, 2) for t in bare_t]}")
    write_json("foundation.json", {"accuracy": accs, "engine_train_time_s": engine_t, "bare_time_s": bare_t,
                                   "ratio_of_medians": eng / bare, "recipe": RECIPE})


if __name__ == "__main__":
    main()

"""Continual-learning anchor protocol (issue "Continual learning core").

Split Fashion-MNIST, class-incremental, 5 tasks x 2 classes in natural order; MLP 784-256-256-10 (PyTorch
default init), one 10-way head; plain SGD lr 0.03, no momentum; batch 32, replay minibatch 32, buffer 500;
inputs scaled to [0, 1] and normalised (0.2860, 0.3530), no augmentation; 1 epoch per task (and 5);
seeds 0, 1, 2; 2 threads. Reported: final average Class-IL and Task-IL accuracy (mean ± std over seeds),
forgetting, and training wall time (median), next to a bare PyTorch loop doing naive fine-tuning on the
same tensors (medians of interleaved repeats). Avalanche cannot run here (it needs torchvision, which has
no wheel for this torch), so its times from the issue are compared in units of the bare loop: the issue's
bare loop took 1.05 s in Avalanche's sitting, ours is measured in this one; "time vs Avalanche" is
(ours / our bare loop) / (Avalanche / 1.05) over Avalanche's range. Rows "@after-task" use Avalanche's
buffer discipline (experience-balanced, filled at task end) instead of mammoth's reservoir.

usage: python benchmarks/bench_continual.py [--epochs 1 5] [--methods sgd er derpp] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics

from common import bare_sgd_seconds, fmt, mean_std, run_config, table, write_json

PROTOCOL = ["dataset=fashion-mnist", "model=mlp", "hidden=256,256", "stream=class-il", "tasks=5", "lr=0.03",
            "batch_size=32", "replay_batch_size=32", "threads=2"]
METHOD_ARGS = {
    "sgd": ["method=sgd"],
    "er": ["method=er", "buffer_size=500"],
    "der": ["method=der", "buffer_size=500", "alpha=0.3"],
    "derpp": ["method=derpp", "buffer_size=500", "alpha=0.1", "beta=0.5"],
    "agem": ["method=agem", "buffer_size=500"],
    "er_ace": ["method=er_ace", "buffer_size=500"],
    "icarl": ["method=icarl", "buffer_size=500"],
    "ewc_on": ["method=ewc_on", "ewc_lambda=10", "ewc_gamma=1.0"],  # mammoth's Split CIFAR-10 setting
    "lwf_mc": ["method=lwf_mc"],
    "si": ["method=si"],  # mammoth's stored setting: c 0.1, xi 0.1
    "xder_ce": ["method=xder_ce", "buffer_size=500", "alpha=0.1", "beta=0.5"],  # mammoth's eta 0.1, m 0.3
    "xder_ce@eta1": ["method=xder_ce", "buffer_size=500", "alpha=0.1", "beta=0.5", "eta=1.0"],
    # Avalanche's own buffer discipline: experience-balanced, filled at task end (DER: logits of the model
    # at task end), instead of mammoth's reservoir over every presentation
    "er@after-task": ["method=er", "buffer_size=500", "buffer_policy=after-task"],
    "derpp@after-task": ["method=derpp", "buffer_size=500", "alpha=0.1", "beta=0.5", "buffer_policy=after-task"],
}
# From the issue: Avalanche 0.6.0 on this protocol, 1 epoch per task (accuracy, train-time range in s),
# measured when a bare fine-tuning loop took AVALANCHE_BARE s on this machine.
AVALANCHE = {"sgd": (19.95, (3.0, 4.8)), "er": (78.3, (3.5, 4.9)), "derpp": (79.7, (5.7, 7.6))}
AVALANCHE_BARE = 1.05


def bare_finetune(seed: int, epochs: int) -> float:
    """Naive fine-tuning over the 5 tasks as a plain loop on the same tensors: seconds of training."""
    from sparsecl.data.registry import load_dataset

    y = load_dataset("fashion-mnist").y_train
    tasks = [((y == 2 * t) | (y == 2 * t + 1)).nonzero().flatten() for t in range(5)]
    return bare_sgd_seconds(tasks, epochs, 32, 0.03, 0.0, seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--methods", nargs="+", default=list(METHOD_ARGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--timing-rounds", type=int, default=3, help="extra rounds (seed 0) that only add times")
    args = ap.parse_args()
    results: dict = {}
    for epochs in args.epochs:
        rows, bare = [], []
        times: dict[str, list[float]] = {m: [] for m in args.methods}
        ratios: dict[str, list[float]] = {m: [] for m in args.methods}
        # round = the bare loop, then every method; the seeds' rounds also give the accuracies, the extra
        # timing rounds (seed 0) only times. Each time is also divided by its own round's bare loop, which
        # cancels the slow drifts of a shared machine.
        rounds = [(seed, True) for seed in args.seeds] + [(0, False)] * args.timing_rounds
        for seed, record in rounds:
            bare.append(bare_finetune(seed, epochs))
            for m in args.methods:
                s = run_config([*PROTOCOL, *METHOD_ARGS[m], f"epochs={epochs}", f"seed={seed}"])
                times[m].append(s["train_time_s"])
                ratios[m].append(s["train_time_s"] / bare[-1])
                if record:
                    results.setdefault(f"{m}@{epochs}", []).append(
                        {k: s[k] for k in ("final_avg_acc", "forgetting", "bwt", "train_time_s", "examples_processed", "acc_matrix")})
        results[f"bare@{epochs}"] = bare
        results[f"times@{epochs}"] = times
        bare_med = statistics.median(bare)
        for m in args.methods:
            rs = results[f"{m}@{epochs}"]
            cil = mean_std(r["final_avg_acc"]["class_il"] for r in rs)
            til = mean_std(r["final_avg_acc"]["task_il"] for r in rs)
            fgt = mean_std(r["forgetting"]["class_il"] for r in rs)
            t, ratio = statistics.median(times[m]), statistics.median(ratios[m])
            av = AVALANCHE.get(m.split("@")[0]) if epochs == 1 else None
            rel = ""
            if av:  # Avalanche's time in units of the bare loop of its sitting, ours in units of ours
                lo, hi = (a / AVALANCHE_BARE for a in av[1])
                rel = f"{ratio / hi:.2f}-{ratio / lo:.2f}x"
            rows.append([m, fmt(*cil), fmt(*til), fmt(*fgt), f"{t:.2f}", f"{ratio:.2f}x",
                         f"{av[0]} / {av[1][0]}-{av[1][1]} s" if av else "", rel])
        print(f"\n## Split Fashion-MNIST, 5 x 2 classes, {epochs} epoch(s) per task, seeds {args.seeds}\n")
        print(table(["method", "Class-IL", "Task-IL", "forgetting (CIL)", "train time (s, median)",
                     "vs bare loop (median of paired ratios)", "Avalanche 0.6.0 (acc / time, from the issue)",
                     "time vs Avalanche (bare-loop units)"], rows))
        print(f"\nbare PyTorch fine-tune loop: median {bare_med:.2f} s ({[round(b, 2) for b in bare]})")
    write_json("continual.json", {"protocol": PROTOCOL, "methods": METHOD_ARGS, "results": results})


if __name__ == "__main__":
    main()

"""Where a sweep's runs execute, behind a registry. Each executor takes the jobs (``sparsecl train``
argument lists) and returns their exit codes in order; a job is ``run_job``, the train CLI in-process.

* ``serial``: one after another in this process (debugging; stops at the first interrupted run);
* ``local`` (default): a process pool of ``workers`` processes (spawned: no forked torch threads);
* ``submitit-local``: submitit's LocalExecutor, each run a local subprocess managed by submitit (what the
  tests use to cover the submitit path without a cluster);
* ``slurm``: submitit's AutoExecutor on Slurm, one array job, ``slurm:`` resources per run.

A run interrupted in any of them (SIGINT/SIGTERM, Slurm preemption) leaves a checkpoint; running the
sweep again resumes it.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

from sparsecl.loggers.base import require
from sparsecl.registry import Registry
from sparsecl.sweep.config import Sweep

Executor = Callable[[list[list[str]], Sweep], list[int]]
EXECUTORS: Registry[Executor] = Registry("sweep executor")
INTERRUPTED = 130  # the train CLI's exit code after SIGINT/SIGTERM (checkpoint written)


def run_job(argv: list[str]) -> int:
    """One run: ``sparsecl train`` with ``argv``, in this process; its exit code."""
    from sparsecl.cli import main

    return main(["train", *argv])


@EXECUTORS.register("serial")
def serial(jobs: list[list[str]], sweep: Sweep) -> list[int]:  # noqa: ARG001
    codes: list[int] = []
    for argv in jobs:
        codes.append(run_job(argv))
        if codes[-1] == INTERRUPTED:  # the user asked to stop: start nothing more
            break
    return codes + [INTERRUPTED] * (len(jobs) - len(codes))


@EXECUTORS.register("local")
def local(jobs: list[list[str]], sweep: Sweep) -> list[int]:
    """Ctrl-C: runs in training checkpoint and stop (the train loop's own SIGINT handling), queued runs are
    cancelled; idle workers ignore the signal (``_quiet``) instead of printing tracebacks."""
    workers = min(sweep.workers, len(jobs))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet)
    codes: dict[int, int] = {}
    running: dict[Future, int] = {}
    queue = list(range(len(jobs)))
    try:  # at most ``workers`` runs handed to the pool at a time, so nothing queued outlives a Ctrl-C
        while queue or running:
            while queue and len(running) < workers and INTERRUPTED not in codes.values():
                i = queue.pop(0)
                running[pool.submit(run_job, jobs[i])] = i
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                codes[running.pop(f)] = _code(f)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [codes.get(i, INTERRUPTED) for i in range(len(jobs))]


def _quiet() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _code(future) -> int:  # noqa: ANN001
    """A worker's exit code; a worker that died (killed, out of memory) is a failed run, said in one line."""
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - any failure of one run must not stop the others' results
        print(f"sparsecl sweep: a run's worker failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return 1


def _submitit(jobs: list[list[str]], executor) -> list[int]:  # noqa: ANN001
    submitted = executor.map_array(run_job, jobs)
    return [_code(job) for job in submitted]


@EXECUTORS.register("submitit-local")
def submitit_local(jobs: list[list[str]], sweep: Sweep) -> list[int]:
    submitit = require("submitit", "sweep", "executor: submitit-local")
    ex = submitit.LocalExecutor(folder=str(Path(sweep.out) / "submitit" / "%j"))
    ex.update_parameters(timeout_min=sweep.slurm.timeout_min)
    return _submitit(jobs, ex)


@EXECUTORS.register("slurm")
def slurm(jobs: list[list[str]], sweep: Sweep) -> list[int]:
    submitit = require("submitit", "sweep", "executor: slurm")
    s = sweep.slurm
    ex = submitit.AutoExecutor(folder=str(Path(sweep.out) / "submitit" / "%j"), cluster="slurm")
    params = {"timeout_min": s.timeout_min, "cpus_per_task": s.cpus_per_task, "gpus_per_node": s.gpus_per_node,
              "slurm_array_parallelism": s.array_parallelism, "name": sweep.name}
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    ex.update_parameters(**params)
    return _submitit(jobs, ex)

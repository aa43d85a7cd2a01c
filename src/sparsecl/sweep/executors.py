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
from concurrent.futures import ProcessPoolExecutor
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
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(sweep.workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(run_job, argv) for argv in jobs]
        return [_code(f) for f in futures]


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

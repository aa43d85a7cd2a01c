"""Run ``sparsecl train`` in this process and SIGKILL it at a chosen point (fault-injection tests).

usage: python fault_driver.py KILL -- <sparsecl train arguments>
KILL: comma-separated; ``clock:S`` (the trainer's clock reads S seconds per optimizer step, for
time-based checkpoints) and one of ``none`` | ``step:N`` (after optimizer step N) | ``term:N`` (SIGTERM after step N) | ``ckpt:N`` (halfway through writing the N-th
checkpoint file, the temporary file half written) | ``task:T`` (right after task T's evaluation, before
its checkpoint).
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    specs, rest = sys.argv[1].split(","), sys.argv[sys.argv.index("--") + 1:]
    from sparsecl import cli
    from sparsecl.train import checkpoint, loop

    if specs[0].startswith("clock:"):
        per_step = float(specs.pop(0).partition(":")[2])
        real_init = loop.Trainer.__init__

        def init(self, *a, **kw):
            real_init(self, *a, **kw)
            self._clock = lambda: self.state.step * per_step
            self._last_save = self._clock()

        loop.Trainer.__init__ = init
    kill = specs[0]
    kind, _, arg = kill.partition(":")
    n = int(arg) if arg else 0
    if kind in ("step", "term"):
        real_step = loop.Trainer._step

        def step(self, *a, **kw):
            real_step(self, *a, **kw)
            if self.state.step == n:
                die() if kind == "step" else os.kill(os.getpid(), signal.SIGTERM)

        loop.Trainer._step = step
    elif kind == "ckpt":
        real_open = open
        calls = {"n": 0}

        def save(state, run_dir):
            calls["n"] += 1
            if calls["n"] == n:  # write half a temporary file, then die mid-write
                import io

                import torch

                buf = io.BytesIO()
                torch.save(state, buf)
                with real_open(os.path.join(run_dir, f".{checkpoint.NAME}.tmp"), "wb") as f:
                    f.write(buf.getbuffer()[: buf.getbuffer().nbytes // 2])
                    f.flush()
                    os.fsync(f.fileno())
                die()
            return real_save(state, run_dir)

        real_save = checkpoint.save
        checkpoint.save = save
    elif kind == "task":
        real_eval = loop.Trainer._evaluate

        def evaluate(self, t):
            real_eval(self, t)
            if t == n:
                die()

        loop.Trainer._evaluate = evaluate
    return cli.main(["train", *rest])


if __name__ == "__main__":
    sys.exit(main())

"""Run several ``sparsecl train`` commands in one (multi-process) launch, recording per-rank state.

usage: python ddp_driver.py [OPTIONS --] <train args> [--- [OPTIONS --] <train args> ...]
(under ``python -m torch.distributed.run --nproc_per_node=N``: every rank runs every command in turn).
OPTIONS: ``--float64`` (default dtype float64 for this command: the data transform and the model follow
it), ``--trace DIR`` (after every step, rank r appends the fingerprints of the mask engine's masks and of
the buffer to DIR/rank{r}.jsonl), ``--diverge N`` (rank 1 flips one mask entry after step N), ``--term N``
(rank 1 alone sends itself SIGTERM after step N).
The commands share one process group. Each command's exit code is written to the file named by env
DDP_DRIVER_CODES (one per line, rank 0).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch


def parse(chunk: list[str]) -> tuple[dict, list[str]]:
    if "--" not in chunk:
        return {}, chunk
    opts, rest = chunk[: chunk.index("--")], chunk[chunk.index("--") + 1:]
    out = {"float64": "--float64" in opts}
    for key in ("--trace", "--diverge", "--term"):
        if key in opts:
            out[key[2:]] = opts[opts.index(key) + 1]
    return out, rest


def main() -> int:
    from sparsecl import cli
    from sparsecl.distributed import runtime
    from sparsecl.distributed.check import fingerprint
    from sparsecl.train import loop

    argv, commands = sys.argv[1:], []
    while "---" in argv:
        i = argv.index("---")
        commands.append(argv[:i])
        argv = argv[i + 1:]
    commands.append(argv)
    real_step, teardown = loop.Trainer._step, runtime.teardown
    runtime.teardown = lambda: None  # one process group for every command (torchrun's store: one init)
    codes = []
    for chunk in commands:
        opts, args = parse(chunk)
        torch.set_default_dtype(torch.float64 if opts.get("float64") else torch.float32)

        def step(self, *a, _opts=opts, **kw):
            real_step(self, *a, **kw)
            rank, n = self.dist.rank, self.state.step
            if _opts.get("diverge") and rank == 1 and n == int(_opts["diverge"]):
                layer = self.run.engine.layers[0]
                layer.mask.view(-1)[0] = ~layer.mask.view(-1)[0]
            if _opts.get("term") and rank == 1 and n == int(_opts["term"]):
                os.kill(os.getpid(), signal.SIGTERM)
            if _opts.get("trace"):
                buf = getattr(self.run.method, "buffer", None)
                rec = {"step": n, "updated": self.run.engine.last_step.updated,
                       "masks": fingerprint(self.run.engine.masks),
                       "buffer": fingerprint(buf.state_dict()) if buf is not None else None}
                with open(Path(_opts["trace"]) / f"rank{rank}.jsonl", "a") as f:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")

        loop.Trainer._step = step
        codes.append(cli.main(["train", *args]))
    teardown()
    if os.environ.get("DDP_DRIVER_CODES") and int(os.environ.get("RANK", "0")) == 0:
        Path(os.environ["DDP_DRIVER_CODES"]).write_text("".join(f"{c}\n" for c in codes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

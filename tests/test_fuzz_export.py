"""A bounded mutation fuzzer for exported files: every mutated export that ``sparsecl eval`` is given ends in
exit 0 or in exit 2 with ONE line on stderr, never a traceback, never a huge allocation.

The mutations are structure-valid where it matters: the header is re-signed after each edit, so the file
passes its checksums and reaches the record, size and model checks behind them. Fixed seed, a few hundred
cases, a few seconds.
"""

from __future__ import annotations

import copy
import random
import resource
from pathlib import Path

import pytest

from datafiles import resign_export

from sparsecl import cli

CASES = 240
POOL = [-1, 0, 1, 3, 2**29, 2**31, 2**63, 10**30, -(10**30), 1.5, float("nan"), "x", "", None, True, [], {},
        [2**29], [[1]], [16, 64], {"a": 1}, "float64", "int64", "bitmask", "indices", "raw", "int8", "delta8"]


@pytest.fixture(scope="module")
def export_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    run = d / "run"
    assert cli.main(["train", "dataset=digits", "model=mlp", "hidden=16", "tasks=1", "epochs=1", "batch_size=256",
                     "progress=false", "sparsity.method=static", "sparsity.density=0.5", "--out", str(run)]) == 0
    assert cli.main(["export", str(run), "--output", str(d / "model.spcl")]) == 0
    return d / "model.spcl"


def _paths(obj, prefix=()):
    """Every (container, key) inside the header, for a mutation to hit."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield obj, k
        yield from _paths(v, (*prefix, k))


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:  # raw bytes: flip, truncate, append (the checksums must catch them)
        b = bytearray(data)
        op = rng.randrange(3)
        if op == 0:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[rng.randrange(len(b)):]
        else:
            b += bytes(rng.randrange(1, 64))
        return bytes(b)
    return resign_export(data, lambda header: _edit(header, kind, rng))


def _edit(header: dict, kind: int, rng: random.Random) -> None:
    if kind == 1:  # the stored config: a value of the wrong type or range
        cfg = header["meta"]["config"]
        section = cfg if rng.random() < 0.5 else cfg[rng.choice([k for k, v in cfg.items() if isinstance(v, dict)])]
        section[rng.choice(list(section))] = rng.choice(POOL)
    elif kind == 2:  # a tensor that does not belong to the model: shape, name or dtype
        rec = rng.choice(header["tensors"])
        rec[rng.choice(["shape", "name", "dtype"])] = rng.choice(
            [[rng.randrange(1, 80) for _ in range(rng.randrange(1, 3))], "net.9.weight", "float64", "int32"])
    elif kind == 3:  # drop or duplicate a tensor record
        recs = header["tensors"]
        if rng.random() < 0.5:
            recs.pop(rng.randrange(len(recs)))
        else:
            recs.append(copy.deepcopy(rng.choice(recs)))
    else:  # any field anywhere in the header gets a value from the pool, or disappears
        container, key = rng.choice(list(_paths(header)))
        if isinstance(container, dict) and rng.random() < 0.2:
            del container[key]
        else:
            container[key] = rng.choice(POOL)


def test_mutated_exports_end_in_exit_0_or_one_line_exit_2(export_file: Path, tmp_path: Path, capsys) -> None:
    rng = random.Random(20261207)
    original = export_file.read_bytes()
    target = tmp_path / "m.spcl"
    outcomes = {0: 0, 2: 0}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(CASES):
        target.write_bytes(mutate(original, rng))
        capsys.readouterr()
        rc = cli.main(["eval", str(target)])
        err = capsys.readouterr().err.strip()
        assert rc in outcomes, (i, rc, err)
        if rc == 2:
            assert len(err.splitlines()) == 1 and err.startswith("sparsecl eval: error: "), (i, err)
        outcomes[rc] += 1
    assert outcomes[2] > CASES // 2  # most mutations must be caught, not silently evaluated
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 512, f"peak memory grew {grown_mb:.0f} MB: a declared size was allocated"

"""A bounded mutation fuzzer for config files (issue 17): every mutated file given to
``sparsecl train --config FILE --check`` either loads (exit 0) or ends in exit 2 with exactly ONE line on
stderr; never a traceback (an exception escaping ``main`` fails the test with it).

Mutations act on the parsed structure (values of every type, huge and non-finite numbers, deep nesting,
unknown and misplaced keys, sections given as scalars, aliases) and on the raw text (flipped, cut and
inserted bytes). Fixed seed, a few hundred cases, a few seconds (``--check`` resolves the config without
loading data or training).
"""

from __future__ import annotations

import copy
import random

import yaml

from sparsecl import cli
from sparsecl.configtools import MAX_DEPTH, MAX_FILE_BYTES

CASES = 400
BASE = {
    "dataset": "digits", "model": "mlp", "hidden": [32, 32], "epochs": 2, "batch_size": 32, "lr": 0.1,
    "stream": "class-il", "tasks": 2, "seed": 0, "class_order": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    "continual": {"method": "derpp", "buffer_size": 50, "alpha": 0.1, "beta": 0.5},
    "sparsity": {"method": "rigl", "density": 0.2, "distribution": "erk", "delta_t": 10},
    "checkpoint": {"every": 0},
}
POOL = [-1, 0, 1, 3, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 1.5, -0.5, 1e308, float("inf"), float("nan"),
        "x", "", "none", "1e400", "rigl", "derpp", "der++", "erk", None, True, False, [], {}, [[1]], [1, "a"],
        {"a": 1}, {"method": "rigl"}, "9" * 5000, "\u00e9\u4e2d", [2**70]]
KEYS = ["lrr", "sparsity", "method", "sparsity.method", "continual", "density", "buffer_size", "nm_n", "1", "",
        "custom_densities", "sparsity.custom_densities", "distill", "a.b.c"]


def _slots(obj):
    """Every (container, key) of the nested structure."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield obj, k
        yield from _slots(v)


def _deep(rng: random.Random) -> dict:
    node: dict = {"x": 1}
    for _ in range(rng.randrange(MAX_DEPTH - 2, 4 * MAX_DEPTH)):
        node = {"sparsity": node} if rng.random() < 0.5 else {"k": [node]}
    return node


def mutate(rng: random.Random) -> str:
    data = copy.deepcopy(BASE)
    for _ in range(rng.randrange(1, 4)):
        slots = list(_slots(data))
        kind = rng.randrange(8)
        if kind <= 2 and slots:  # a value of another type or size
            parent, key = rng.choice(slots)
            parent[key] = copy.deepcopy(rng.choice(POOL))
        elif kind == 3 and slots:  # a key removed
            parent, key = rng.choice(slots)
            del parent[key]
        elif kind == 4:  # an unknown, misplaced or section key
            target = rng.choice([d for d in (data, data.get("sparsity"), data.get("continual")) if isinstance(d, dict)]
                                or [data])
            target[rng.choice(KEYS)] = copy.deepcopy(rng.choice(POOL))
        elif kind == 5:  # deep nesting
            data[rng.choice(["sparsity", "continual", "zz"])] = _deep(rng)
        elif kind == 6:  # a section or the whole file replaced by a scalar or a list
            if rng.random() < 0.2:
                data = copy.deepcopy(rng.choice(POOL))
                break
            data[rng.choice(["sparsity", "continual", "checkpoint"])] = copy.deepcopy(rng.choice(POOL))
        else:  # an alias bomb: each level refers to the one below several times
            return "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "lr: 0.1\n"
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if rng.random() < 0.25:  # raw text: flip, cut or insert characters
        chars = list(text)
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(max(len(chars), 1))
            op = rng.randrange(3)
            if op == 0 and chars:
                chars[i] = rng.choice(":-[]{}&*!|>'\"#%@ \n\t0x")
            elif op == 1:
                chars = chars[:i]
            else:
                chars.insert(i, rng.choice(":-[]{}&*!?,\n"))
        text = "".join(chars)
    return text


def test_mutated_config_files_load_or_fail_in_one_line(tmp_path, capsys):
    rng = random.Random(21)
    path = tmp_path / "c.yaml"
    outcomes = {0: 0, 2: 0}
    for i in range(CASES):
        text = mutate(rng)
        path.write_text(text)
        capsys.readouterr()
        rc = cli.main(["train", "--config", str(path), "--check"])
        err = capsys.readouterr().err.strip()
        assert rc in outcomes, (i, rc, err, text[:300])
        if rc == 2:
            assert len(err.splitlines()) == 1 and err.startswith("sparsecl train: error: "), (i, err, text[:300])
            assert "Traceback" not in err and len(err) < 400, (i, err)
        outcomes[rc] += 1
    assert outcomes[0] > 20 and outcomes[2] > CASES // 2  # both paths exercised


def test_config_file_limits_name_the_key(tmp_path, capsys):
    cases = {
        "deep": ("sparsity:\n" + "".join("  " * (d + 1) + f"k{d}:\n" for d in range(MAX_DEPTH + 2))
                 + "  " * (MAX_DEPTH + 3) + "x: 1\n", "sparsity.k0.k1.k2.k3.k4.k5.k6.k7 nests deeper than 8 levels"),
        "int": ("epochs: 100000000000000000000000\n", "epochs: 100000000000000000000000 is out of range"),
        "float": ("lr: .inf\n", "lr: inf is not a finite number"),
        "overflow": (f"lr: {10**400}\n", "lr: cannot read"),
        "type": ("sparsity:\n  density: [0.1]\n", "sparsity.density: cannot read [0.1] as float"),
        "section": ("sparsity: rigl\n", "did you mean sparsity.method=rigl?"),
        "self-alias": ("a: &a [*a]\n", "a[0][0][0][0][0][0][0][0] nests deeper than 8 levels"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        capsys.readouterr()
        assert cli.main(["train", "--config", str(path), "--check"]) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (name, err)
    big = tmp_path / "big.yaml"
    big.write_text("lr: 0.1\n" + "#" * MAX_FILE_BYTES)
    assert cli.main(["train", "--config", str(big), "--check"]) == 2
    assert f"more than the {MAX_FILE_BYTES} a config may have" in capsys.readouterr().err


def test_check_prints_the_resolved_config(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert cli.main(["train", "--config", str(path), "--check", "epochs=3"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert got["epochs"] == 3 and got["sparsity"]["method"] == "rigl" and got["continual"]["method"] == "derpp"
    assert not list(tmp_path.glob("runs"))  # nothing trained, no folder made

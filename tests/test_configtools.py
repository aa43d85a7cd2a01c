"""Config machinery: key resolution, coercion, one-line errors, files."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sparsecl.configtools import ConfigError, describe, load_file, make_config, to_dict


@dataclass
class Inner:
    density: float = 1.0
    method: str = "dense"
    layers: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")


@dataclass
class Other:
    buffer_size: int = 0
    method: str = "sgd"


@dataclass
class Root:
    lr: float = 0.1
    hidden: tuple[int, ...] = (4, 4)
    flag: bool = False
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    other: Other = field(default_factory=Other)


def test_defaults_and_overrides_coerce_types():
    cfg = make_config(Root, None, ["lr=0.5", "hidden=8,16,32", "flag=true", "maybe=none", "inner.density=0.1",
                                   "buffer_size=500", "inner.layers={a: 0.5}"])
    assert cfg.lr == 0.5 and cfg.hidden == (8, 16, 32) and cfg.flag is True and cfg.maybe is None
    assert cfg.inner.density == 0.1 and cfg.other.buffer_size == 500 and cfg.inner.layers == {"a": 0.5}


def test_bare_key_ambiguity_and_unknown_keys_are_one_line():
    with pytest.raises(ConfigError, match="ambiguous; use one of: inner.method, other.method"):
        make_config(Root, None, ["method=x"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' \(did you mean lr"):
        make_config(Root, None, ["lrr=1"])


def test_bad_values_name_the_key_and_type():
    with pytest.raises(ConfigError, match=r"^lr: cannot read 'abc' as float$"):
        make_config(Root, None, ["lr=abc"])
    with pytest.raises(ConfigError, match=r"^flag: cannot read 'maybe' as bool$"):
        make_config(Root, None, ["flag=maybe"])
    with pytest.raises(ConfigError, match=r"^other.buffer_size: cannot read '1.5' as int$"):
        make_config(Root, None, ["buffer_size=1.5"])
    with pytest.raises(ConfigError, match=r"^density must be in \(0, 1\], got 0.0$"):
        make_config(Root, None, ["inner.density=0"])
    with pytest.raises(ConfigError, match="expected key=value"):
        make_config(Root, None, ["lr"])


def test_yaml_and_toml_files_nested_or_flat(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.2\ninner:\n  density: 0.25\nbuffer_size: 200\n")
    t = tmp_path / "c.toml"
    t.write_text('lr = 0.3\n"inner.density" = 0.5\n[other]\nbuffer_size = 100\n')
    a = make_config(Root, load_file(y), ["lr=0.4"])
    b = make_config(Root, load_file(t))
    assert (a.lr, a.inner.density, a.other.buffer_size) == (0.4, 0.25, 200)
    assert (b.lr, b.inner.density, b.other.buffer_size) == (0.3, 0.5, 100)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_file(tmp_path / "nope.yaml")


def test_round_trip_through_dict_is_identity():
    cfg = make_config(Root, None, ["hidden=3,2", "inner.density=0.3"])
    assert make_config(Root, to_dict(cfg)) == cfg
    keys = [k for k, _, _ in describe(Root)]
    assert "inner.density" in keys and "other.buffer_size" in keys and "lr" in keys


def test_preferred_section_wins_ambiguous_bare_key():
    @dataclass
    class Pref(Root):
        BARE_KEY_SECTIONS = ("other",)

    cfg = make_config(Pref, None, ["method=er", "inner.method=rigl"])
    assert cfg.other.method == "er" and cfg.inner.method == "rigl"

"""Typed dataclass configs <-> dicts, files and ``key=value`` overrides.

The CLI namespace stops here: library code only ever sees the dataclasses. Rules:
* a key is a dotted path (``sparsity.density``) or, when unambiguous, a bare field name of any section
  (``buffer_size`` resolves to ``continual.buffer_size``); a root class may name sections that win
  ambiguous bare keys (``BARE_KEY_SECTIONS``: ``method`` is ``continual.method``, not ``sparsity.method``);
* values from the command line are strings, coerced to the field's annotated type;
* an unknown key or a bad value is ONE line (``ConfigError``) listing what would have been valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


def helpfield(text: str, **kw: Any) -> Any:
    """A dataclass field carrying its ``--help`` text (``sparsecl train --keys`` prints it)."""
    return dataclasses.field(metadata={"help": text}, **kw)


class ConfigError(ValueError):
    """A wrong config key or value; the message is one line that says what is valid."""


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a config dataclass (cached: resolving string annotations is slow, and
    key resolution asks for every section's hints once per key)."""
    return get_type_hints(cls)


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def sections(cls: type, prefix: str = "") -> dict[str, type]:
    """All nested dataclass sections by dotted path ('' is the root)."""
    out = {prefix: cls}
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if is_section(tp):
            out.update(sections(tp, f"{prefix}{f.name}."))
    return out


def leaf_keys(cls: type) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every settable key (dotted path) -> (owning section class, field)."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for prefix, sec in sections(cls).items():
        for f in dataclasses.fields(sec):
            if not is_section(_hints(sec)[f.name]):
                out[prefix + f.name] = (sec, f)
    return out


def resolve_key(cls: type, key: str) -> str:
    """Dotted path for ``key`` (a dotted path already, or a bare field name unique across sections)."""
    keys = leaf_keys(cls)
    if key in keys:
        return key
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == key]
    preferred = [k for k in matches if k.split(".", 1)[0] in getattr(cls, "BARE_KEY_SECTIONS", ())]
    if len(matches) == 1 or len(preferred) == 1:
        return (preferred or matches)[0]
    if len(matches) > 1:
        raise ConfigError(f"key {key!r} is ambiguous; use one of: {', '.join(matches)}")
    close = difflib.get_close_matches(key, list(dict.fromkeys([*keys, *(k.rsplit(".", 1)[-1] for k in keys)])), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown config key {key!r}{hint}; see `sparsecl train --help` for all keys")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (a string from the CLI, or a YAML/TOML value) to the annotated type ``tp``."""
    tp, optional = _strip_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    origin = get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if isinstance(value, str) else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is tuple:
            (inner, *rest) = get_args(tp)
            items = _as_list(value)
            return tuple(coerce(v, inner, key) for v in items)
        if origin is list:
            (inner,) = get_args(tp)
            return [coerce(v, inner, key) for v in _as_list(value)]
        if origin is dict:
            kt, vt = get_args(tp)
            d = value
            if isinstance(value, str):
                d = yaml.safe_load(value) if value.strip() else {}
            if not isinstance(d, dict):
                raise ValueError
            return {coerce(k, kt, key): coerce(v, vt, key) for k, v in d.items()}
        if origin is typing.Literal:
            if value not in get_args(tp):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"{key}: cannot read {value!r} as {_type_name(tp)}")


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip().strip("[]()")
        return [v.strip() for v in s.split(",") if v.strip()]
    return [value]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate ``cls`` from a nested dict (unknown keys are errors); validation errors -> ConfigError."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            resolve_key(cls, k)  # raises with a hint
            raise ConfigError(f"config key {prefix}{k} must be given as {resolve_key(cls, k)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if is_section(tp):
            sub = data[f.name]
            if not isinstance(sub, dict):
                raise ConfigError(f"{prefix}{f.name} is a section; give keys like {prefix}{f.name}.<key>=...")
            kwargs[f.name] = build(tp, sub, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = coerce(data[f.name], tp, prefix + f.name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        # the section's own checks name their keys (``sparsity.density must be ...``): pass the line on
        raise ConfigError(str(e).splitlines()[0] if str(e) else f"{prefix.rstrip('.') or 'config'}: {type(e).__name__}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-safe nested dict of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        text = p.read_text()
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"config file {p}: cannot parse ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of keys to values")
    return data


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    data[leaf] = value


def normalise(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Re-key a (possibly flat, possibly dotted) dict as a nested dict of dotted paths resolved on ``cls``."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            full = f"{prefix}{k}"
            if isinstance(v, dict) and (full in sections(cls) or f"{full}." in sections(cls)):
                walk(v, f"{full}.")
            else:
                set_path(out, resolve_key(cls, full), v)

    walk(data, "")
    return out


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def make_config(cls: type, file_data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Any:
    """Defaults, then the file, then the overrides: the resolved, validated config."""
    data = normalise(cls, file_data or {})
    for k, v in parse_overrides(overrides or []).items():
        set_path(data, resolve_key(cls, k), v)
    return build(cls, data)


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(key, default, help) for every key: what ``sparsecl train --help`` prints."""
    rows = []
    for key, (sec, f) in leaf_keys(cls).items():
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((key, json.dumps(to_dict(default) if dataclasses.is_dataclass(default) else default), f.metadata.get("help", "")))
    return rows


def choices(name: str, value: str, valid: typing.Iterable[str]) -> None:
    """Raise ValueError (one line) unless ``value`` is one of ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")

"""Typed dataclass configs <-> dicts, files and ``key=value`` overrides.

The CLI namespace stops here: library code only ever sees the dataclasses. Rules:
* a key is a dotted path (``sparsity.density``) or, when unambiguous, a bare field name of any section
  (``buffer_size`` resolves to ``continual.buffer_size``); a root class may name sections that win
  ambiguous bare keys (``BARE_KEY_SECTIONS``: ``method`` is ``continual.method``, not ``sparsity.method``);
* values from the command line are strings, coerced to the field's annotated type;
* an unknown key or a bad value is ONE line (``ConfigError``) listing what would have been valid, with the
  closest keys AND values (``sparsity=rigl``: did you mean sparsity.method=rigl?; ``der++``: derpp);
* a config file is bounded before it is read (``MAX_FILE_BYTES``) and after (``MAX_DEPTH`` levels,
  ``MAX_NODES`` values, aliases counted at every use); integers beyond int64 and non-finite floats are
  refused, each error naming its key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
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


MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes; a megabyte is a mistake, not a config
MAX_DEPTH = 8  # sections nest 2 deep, dict-valued keys 1 more
MAX_NODES = 10_000  # values (mappings, lists, scalars) in one file, every alias use counted
INT_LIMIT = 2**63 - 1  # every integer a config holds becomes a torch int64 or a Python loop bound


def _normal(name: str) -> str:
    """Spelling-insensitive form of a name: ``der++`` ~ ``derpp``, ``er-ace`` ~ ``er_ace``."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("+", "p"))


def closest(value: str, valid: typing.Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``value``: same spelling up to case, ``+``/``p`` and punctuation first,
    then difflib's closest (ratio >= 0.6)."""
    valid = [str(v) for v in valid]
    same = [v for v in valid if _normal(v) == _normal(value)]
    return same[:n] if same else difflib.get_close_matches(str(value), valid, n=n)


def did_you_mean(names: typing.Sequence[str]) -> str:
    return f" (did you mean {', '.join(names)}?)" if names else ""


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
    raise ConfigError(f"unknown config key {key!r}{did_you_mean(_close_keys(cls, key))}; "
                      "`sparsecl train --keys` lists every key")


def _close_keys(cls: type, key: str) -> list[str]:
    keys = leaf_keys(cls)
    bare = {k.rsplit(".", 1)[-1]: k for k in keys}
    close = closest(key, [*keys, *bare])
    return list(dict.fromkeys(bare.get(c, c) if c not in keys else c for c in close))


def resolve_pair(cls: type, key: str, value: Any) -> str:
    """``resolve_key``, but an unknown key's error also suggests ``k=value`` for the keys that accept
    ``value`` as one of their few valid choices (``sparsity=rigl`` -> ``sparsity.method=rigl``)."""
    try:
        return resolve_key(cls, key)
    except ConfigError as e:
        if "ambiguous" in str(e) or not isinstance(value, str) or not 0 < len(value.strip()) <= 40:
            raise
        takers = _keys_taking(cls, value.strip())
        if not takers:
            raise
        ranked = sorted(takers, key=lambda k: (not k.startswith(f"{key}."),
                                               -difflib.SequenceMatcher(None, key, k).ratio()))
        raise ConfigError(f"unknown config key {key!r}{did_you_mean([f'{k}={value.strip()}' for k in ranked[:3]])}; "
                          "`sparsecl train --keys` lists every key") from None


def _keys_taking(cls: type, value: str) -> list[str]:
    """Keys whose validation refuses an arbitrary word but accepts ``value`` (keys with few valid values:
    registries, modes). Tried on the defaults, one key at a time; only on the error path."""
    junk = "zz-not-a-choice"

    def refuses(key: str, v: str) -> bool:
        data: dict[str, Any] = {}
        set_path(data, key, v)
        try:
            build(cls, data)
        except (ConfigError, ValueError, TypeError, KeyError) as e:
            return v[:40] in str(e)  # refused for THIS value, not for another key's default
        return False

    out = []
    for key, (_, f) in leaf_keys(cls).items():
        if _strip_optional(_hints(_owner(cls, key)).get(f.name))[0] is str and refuses(key, junk) and not refuses(key, value):
            out.append(key)
    return out


def _owner(cls: type, key: str) -> type:
    return leaf_keys(cls)[key][0]


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
            n = int(str(value).strip()) if isinstance(value, str) else int(value)
            if abs(n) > INT_LIMIT:
                raise ConfigError(f"{key}: {_short(value)} is out of range (at most 2^63-1 in magnitude)")
            return n
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            x = float(value)
            if not math.isfinite(x):
                raise ConfigError(f"{key}: {_short(value)} is not a finite number")
            return x
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
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value
    raise ConfigError(f"{key}: cannot read {_short(value)} as {_type_name(tp)}")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error line stays one short line)."""
    r = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else f"{str(value)[:12]}...({len(str(value))} digits)"
    return r if len(r) <= limit else r[: limit - 3] + "..."


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
    derive = getattr(cls, "derive_before_build", None)  # settings the sections need from other sections
    data = dict(data)
    pre = derive(data) if derive is not None else []
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
        obj = cls(**kwargs)
        if pre:
            obj.derived[:0] = pre  # first: they happened first
        return obj
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as e:
        # the section's own checks name their keys (``sparsity.density must be ...``): pass the line on
        raise ConfigError(one_line(str(e)) or f"{prefix.rstrip('.') or 'config'}: {type(e).__name__}") from None


def one_line(message: str, longest: int = 60) -> str:
    """The first line of ``message`` with every word longer than ``longest`` cut (a huge value echoed back
    stays a short line)."""
    first = (message.splitlines() or [""])[0]
    return re.sub(r"\S{%d,}" % (longest + 1), lambda m: m.group(0)[: longest - 3] + "...", first)


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
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"config file {p}: {p.stat().st_size} bytes, more than the {MAX_FILE_BYTES} a config may have")
        text = p.read_text()
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0].strip() or type(e).__name__
        raise ConfigError(f"config file {p}: cannot parse ({first[:120]})") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot read ({e.strerror or type(e).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of keys to values")
    check_bounds(data, f"config file {p}")
    return data


def check_bounds(data: Any, where: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES`` values (YAML aliases count at
    every use, so an alias bomb or a self-referencing alias stops here), naming the key where it happens."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES} values (at {path or 'the top level'}); a config has a few dozen")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: {path} nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


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
                set_path(out, resolve_pair(cls, full, v), v)

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
        set_path(data, resolve_pair(cls, k, v), v)
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
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}"
                         f"{did_you_mean(closest(value, valid))}")

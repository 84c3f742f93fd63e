"""Dataclass configs, YAML files and `--override key=value` (tensorflow/models `official` style).

An experiment's preset is a dataclass instance (nested dataclasses allowed). A run's options are

    preset  ->  YAML file (`--config FILE`)  ->  overrides (`--override a.b=3 ...`)

resolved by `resolve_config`, each step validated against the dataclass: unknown keys and values
that do not fit the field's type raise `ConfigError` naming the dotted key, the value and what was
expected. The resolved options are written to `MODEL_DIR/config.yaml` (`save_yaml`, atomic).

Supported field types: `int`, `float`, `bool`, `str`, `X | None` / `Optional[X]`, `tuple[X, ...]`,
`tuple[X, Y]`, `list[X]`, `dict` (free-form) and nested dataclasses. Override values are parsed from
text: `true/false/yes/no/1/0` for bools, `none`/`null` for optional fields, `[32, 64]` or `32,64`
for
sequences, `{a: 1}` (YAML) for dicts.

Example:
    @dataclasses.dataclass
    class Optim:
        lr: float = 2e-4
    @dataclasses.dataclass
    class Cfg:
        batch_size: int = 8
        widths: tuple[int, ...] = (32, 64)
        optim: Optim = dataclasses.field(default_factory=Optim)

    cfg = resolve_config(Cfg(), overrides=["optim.lr=1e-3", "widths=16,32"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "to_dict",
    "from_dict",
    "merge_dict",
    "apply_overrides",
    "parse_override",
    "load_yaml",
    "save_yaml",
    "resolve_config",
]


class ConfigError(ValueError):
    """A config key or value that does not fit the experiment's dataclass."""


# ----------------------------------------------------------------------------- type helpers


def _hints(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable forward refs: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Convert `value` (from YAML or parsed override text) to field type `tp`, or raise
    ConfigError."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        return _coerce_union(value, tp, key)
    if dataclasses.is_dataclass(tp):
        return _coerce_dataclass(value, tp, key)
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar(value, key)
    origin = typing.get_origin(tp)
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(value, tp, key)
    if origin is dict or tp is dict:
        return _coerce_mapping(value, key)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value  # pragma: no cover - exotic annotations are passed through


def _coerce_union(value, tp, key):
    """`X | None` and other unions: None where allowed, else the first member type that accepts
    it."""
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got None")
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a, key)
        except ConfigError:
            continue
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _coerce_dataclass(value, tp, key):
    """A nested config: an instance as is, or a mapping of its fields."""
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key}: expected a mapping for {tp.__name__} "
            f"(set its fields as {key}.<name>=...), got {value!r}"
        )
    return from_dict(tp, value, prefix=key + ".")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _coerce_bool(value, key):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")


def _coerce_int(value, key):
    """Integers, integral floats (2.0) and their text ("3", "1e3"); never a bool."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            f = float(value)
            if f.is_integer():
                return int(f)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected an int, got {value!r}")


def _coerce_float(value, key):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a float, got {value!r}")


def _coerce_str(value, key):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected a string, got {value!r}")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _sequence_items(value, tp, key) -> list | tuple:
    """The items of a sequence value: a list / tuple, or override text `a,b`, `[a, b]`, `(a, b)`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") or text.startswith("("):
            value = yaml.safe_load("[" + text[1:-1] + "]")
        elif text == "":
            value = []
        else:
            value = [yaml.safe_load(v.strip()) for v in text.split(",")]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a sequence ({_type_name(tp)}), got {value!r}")
    return value


def _coerce_sequence(value, tp, key):
    """`tuple[A, B]` (fixed length), `tuple[A, ...]`, `list[A]`, bare `tuple` / `list`."""
    origin = typing.get_origin(tp)
    value = _sequence_items(value, tp, key)
    args = typing.get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(
                f"{key}: expected {len(args)} values ({_type_name(tp)}), got {list(value)!r}"
            )
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    item_tp = args[0] if args else Any
    items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if (origin is tuple or tp is tuple) else items


def _coerce_mapping(value, key):
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return dict(value)


def _check_dataclass_instance(cfg, name="config"):
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"{name}: expected a dataclass instance, got {type(cfg).__name__}")


# ----------------------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg) -> dict:
    """Nested plain dict of a dataclass instance (tuples become lists, for YAML)."""
    _check_dataclass_instance(cfg)

    def conv(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a (possibly partial) dict; missing keys keep their defaults."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")
    cls = cls if isinstance(cls, type) else type(cls)
    default = cls()
    return merge_dict(default, data, prefix=prefix)


def merge_dict(cfg, data: dict | None, prefix: str = ""):
    """A copy of dataclass instance `cfg` with the (nested) values of `data` set, type-checked."""
    _check_dataclass_instance(cfg)
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = _hints(type(cfg))
    changes = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in fields:
            raise ConfigError(
                f"{key}: unknown key; {type(cfg).__name__} has "
                f"{', '.join(sorted(prefix + n for n in fields))}"
            )
        tp = hints.get(k, fields[k].type)
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            changes[k] = merge_dict(cur, v, prefix=key + ".")
        else:
            changes[k] = _coerce(v, tp, key)
    return dataclasses.replace(cfg, **changes)


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, str]:
    """`"a.b=3"` -> `("a.b", "3")`; raises ConfigError for text without `=` or with an empty key."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--override: expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--override: expected key=value with a (dotted) key, got {text!r}")
    return key, value


def apply_overrides(cfg, overrides) -> Any:
    """A copy of `cfg` with each `"dotted.key=value"` of `overrides` applied (values coerced to the
    field type). Unknown keys / bad values raise ConfigError naming them."""
    _check_dataclass_instance(cfg)
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides or ():
        key, raw = parse_override(item)
        parts = key.split(".")
        nested: dict = {}
        d = nested
        for p in parts[:-1]:
            d[p] = {}
            d = d[p]
        d[parts[-1]] = _OverrideText(raw)
        cfg = _merge_override(cfg, nested, "")
    return cfg


class _OverrideText(str):
    """Marks raw command-line text (parsed per field type, `none` -> None for optional fields)."""


def _merge_override(cfg, data: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = _hints(type(cfg))
    ((k, v),) = data.items()
    key = f"{prefix}{k}"
    if k not in fields:
        raise ConfigError(
            f"{key}: unknown key; {type(cfg).__name__} has "
            f"{', '.join(sorted(prefix + n for n in fields))}"
        )
    cur = getattr(cfg, k)
    tp = hints.get(k, fields[k].type)
    if isinstance(v, dict):
        if not dataclasses.is_dataclass(cur):
            raise ConfigError(
                f"{key}: is a {_type_name(tp)}, not a nested config; cannot set "
                f"{key}.{next(iter(v))}"
            )
        return dataclasses.replace(cfg, **{k: _merge_override(cur, v, key + ".")})
    if dataclasses.is_dataclass(cur):
        text = str(v).strip()
        parsed = yaml.safe_load(text) if text else None
        if not isinstance(parsed, dict):
            raise ConfigError(
                f"{key}: is a nested config ({type(cur).__name__}); set its fields as "
                f"{key}.<name>=value, got {str(v)!r}"
            )
        return dataclasses.replace(cfg, **{k: merge_dict(cur, parsed, prefix=key + ".")})
    text = str(v)
    value: Any = text
    stripped = text.strip()
    if stripped.lower() in ("none", "null", "~"):
        if _is_union(tp) and type(None) in typing.get_args(tp):
            value = None
    elif tp is not str and not (_is_union(tp) and str in typing.get_args(tp)):
        # numbers, bools, lists, dicts: YAML scalar/collection syntax
        if stripped.startswith(("[", "{", "(")):
            try:
                value = (
                    yaml.safe_load("[" + stripped[1:-1] + "]")
                    if stripped.startswith("(")
                    else yaml.safe_load(stripped)
                )
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: cannot parse {text!r} ({e.problem})") from None
    return dataclasses.replace(cfg, **{k: _coerce(value, tp, key)})


# ----------------------------------------------------------------------------- YAML files


def load_yaml(path) -> dict:
    """The mapping in YAML file `path` (empty file -> {}); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"--config: {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config: {path} must hold a mapping of option names, got {type(data).__name__}"
        )
    return data


def save_yaml(data, path) -> Path:
    """Write a dataclass instance or dict to YAML at `path`, atomically (temp file + os.replace)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def resolve_config(default, config_file=None, overrides=()):
    """preset -> YAML file -> overrides. Returns a new dataclass instance; `default` is unchanged.

    A YAML file may hold the whole options (as written to `config.yaml`) or only some keys; a
    top-level `config:` key (as in `MODEL_DIR/config.yaml`, which also records the run) is
    unwrapped.
    """
    _check_dataclass_instance(default, "default")
    cfg = default
    if config_file is not None:
        data = load_yaml(config_file)
        if (
            "config" in data
            and isinstance(data["config"], dict)
            and "config" not in {f.name for f in dataclasses.fields(default)}
        ):
            data = data["config"]
        try:
            cfg = merge_dict(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    return apply_overrides(cfg, overrides)

"""Configuration as data: dataclasses <-> dicts <-> YAML, with strict checking.

Model Garden's pattern without its dependency: a tree of dataclasses, YAML
files merged in order, `--params_override "a.b=1,c=2"` on top, every unknown
key or ill-typed value an error that names the dotted key.
"""

import dataclasses
import typing

import yaml

from polynet_tf import fileio


class ConfigError(ValueError):
    """A configuration key or value that is not allowed; names the key."""


def to_dict(config):
    """A dataclass tree as plain dicts/lists/scalars."""
    result = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = value.to_dict() if hasattr(value, "to_dict") else to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[field.name] = value
    return result


def from_dict(cls, values, prefix=""):
    """Builds dataclass `cls` from a (possibly partial) dict, checking every key.

    Args:
        cls: a dataclass type; nested dataclass fields are built recursively.
        values: a mapping of field names to values.
        prefix: dotted path of `values` (for error messages).

    Returns:
        An instance of `cls`.

    Raises:
        ConfigError: unknown key or ill-typed value, naming the dotted key.
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"'{prefix or cls.__name__}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"Unknown configuration key '{_join(prefix, unknown[0])}'; "
            f"known keys of '{prefix or cls.__name__}': {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(hints[name], value, _join(prefix, name))
    return cls(**kwargs)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _convert(annotation, value, key):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        # Values are checked here; cross-field validation (and which parts
        # must be set at all) is the job of the top-level validate().
        return from_dict(annotation, value, key)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"'{key}' has an invalid value {value!r} ({'; '.join(errors)})")
    if annotation is typing.Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        item = args[0] if args else typing.Any
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    return value


def merge_dicts(base, override):
    """Recursively merges `override` into a copy of `base` (mappings only)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(text):
    """`"a.b=1,c.d=[1, 2],e=x"` -> nested dict; values are parsed as YAML.

    Commas inside brackets or braces belong to the value.

    Raises:
        ConfigError: an item without '=' or with an empty key.
    """
    result = {}
    for item in _split_top_level(text or ""):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(
                f"--params_override item {item.strip()!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--params_override item {item.strip()!r} has an empty key")
        value = _parse_value(raw)
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--params_override sets '{key}' below a value")
        node[parts[-1]] = value
    return result


def _parse_value(raw):
    """A YAML scalar/list/mapping, or the raw text when it is not valid YAML
    (e.g. an architecture spec such as `A: 2way | B: poly3 | C: ir`)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw.strip()


def _split_top_level(text):
    items, depth, current = [], 0, []
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def load_yaml(path):
    """Reads one YAML configuration file (a mapping).

    Raises:
        ConfigError: missing file, not UTF-8 text, not YAML, or not a mapping.
    """
    if not fileio.isfile(path):
        raise ConfigError(f"Configuration file not found: {path}")
    try:
        values = yaml.safe_load(fileio.read_text(path)) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"Configuration file {path} is not UTF-8 text ({error}).") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"Configuration file {path} is not valid YAML: "
                          f"{str(error)[:500]}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"Configuration file {path} must hold a mapping at the top level")
    return values


def write_yaml(values, path):
    """Writes `values` as YAML atomically (temporary name, then rename).

    `path` may be any TensorFlow filesystem URI (`gs://...`).
    """
    fileio.atomic_write_text(path, yaml.safe_dump(values, sort_keys=False,
                                                  default_flow_style=None))

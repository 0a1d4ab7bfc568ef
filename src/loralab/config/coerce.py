"""Option values from YAML, JSON or a CLI string converted to the declared field types, with
one-line errors naming the flag."""

from __future__ import annotations

from typing import Any, get_args, get_origin, get_type_hints

from loralab.errors import ConfigError


def field_type(cls: type, name: str) -> Any:
    return get_type_hints(cls)[name]


def coerce(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML, JSON or a CLI string) to the field's declared type."""
    flag = "--" + name.replace("_", "-")
    hint = field_type(cls, name)
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ConfigError(f"{flag} must not be empty")
    base = args[0] if args else hint
    try:
        if get_origin(base) is list:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = [str(v) for v in value]
            else:
                raise ValueError
            return items
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: cannot use {value!r} (expected {_type_name(hint)})") from None
    return value


def _type_name(hint: Any) -> str:
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if get_origin(base) is list:
        return "a comma-separated list"
    return getattr(base, "__name__", str(base))

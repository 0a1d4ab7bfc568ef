"""The rules that study files and search files share: a folder-safe name, the run options a file
may set (checked as a run would check them; the options the study or search sets itself refused,
with the reason), option names normalised (``train-size`` is ``train_size``), and reading the
YAML file with FILE:LINE errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loralab.config import RunConfig
from loralab.errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def norm(key: Any) -> str:
    """An option name as the config spells it (``train-size`` -> ``train_size``)."""
    return str(key).replace("-", "_")


def check_name_and_description(name: Any, description: Any, err: Callable[[str], Exception]) -> None:
    """A folder-safe ``name`` and a text ``description``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise err(f"`name` must be a folder-safe name (letters, digits, . _ -), got {name!r}")
    if not isinstance(description, str):
        raise err("`description` must be text")


def check_options(
    options: Mapping[Any, Any],
    where: str,
    managed: Mapping[str, str],
    owner: str,
    err: Callable[[str], Exception],
) -> None:
    """Every key of ``options`` is a run option that the file may set (not one of ``managed``,
    which the ``owner`` -- "study" or "search" -- sets itself) and every value passes the run's
    own checks."""
    for key in options:
        if not isinstance(key, str):
            raise err(f"{where}: option names must be text, got {key!r}")
        if norm(key) in managed:
            raise err(f"{where}: option {key!r} is set by the {owner} ({managed[norm(key)]})")
    try:
        RunConfig().override(dict(options))
    except ConfigError as e:
        raise err(f"{where}: {e}") from None


def check_top_level(
    values: Any, source: str, keys: tuple[str, ...], required: tuple[str, ...], what: str, shape: str
) -> None:
    """A file's top level: a mapping (``shape`` lists its main keys), no key outside ``keys``,
    every ``required`` key present; ``what`` is "a study" or "a search"."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {what} file must be a mapping ({shape})")
    unknown = [k for k in values if k not in keys]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} ({what} has: {', '.join(keys)})")
    for key in required:
        if key not in values:
            raise ConfigError(f"{source}: missing key {key!r}")


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of ``path``; a missing, unreadable or invalid file is one ConfigError line
    naming the file (and the line, for a syntax error). ``what`` names the file in the message."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None

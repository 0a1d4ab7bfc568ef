"""Tuned studies: a study file's ``tune:`` key searches each cell's setting first (one Optuna search
per cell), then the study runs its seeds at each cell's best setting.

::

    tune:
      space: {lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}}   # for every cell (optional)
      cells:                                  # per-cell spaces, replacing `space` for that cell
        full: {lr: {type: loguniform, low: 1.0e-5, high: 3.0e-4}}
      trials: 10                              # finished trials per cell
      base: {train_size: 2000}                # options for the search runs only (e.g. a subset)
      metric: accuracy                        # sampler, pruner: as in a search file

A cell with no space is not tuned. A searched option replaces the cell's own value. Searches live
in ``<study folder>/tune/<cell>/`` (SQLite, resumable); ``tuning.json`` records each cell's best
values, validation score and search cost.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .spec import MANAGED_OPTIONS, TuneSpec, _norm

TUNE_KEYS = ("space", "cells", "trials", "base", "metric", "sampler", "pruner")
TUNE_DIR = "tune"
TUNING_FILE = "tuning.json"


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
    overrides = {_norm(k): v for k, v in (overrides or {}).items() if v is not None}
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
        searched = {_norm(k) for k in space}
        merged = {
            **{_norm(k): v for k, v in study.base.items()},
            **overrides,
            **{_norm(k): v for k, v in cell.options.items()},
            **{_norm(k): v for k, v in search_base.items()},
        }
        base = {k: v for k, v in merged.items() if k not in searched and k not in MANAGED_OPTIONS}
        slug = re.sub(r"[^a-z0-9.]+", "-", cell.name.lower()).strip("-.")[:48] or "cell"
        out[cell.name] = TuneSpec(
            name=f"{study.name}.{slug}",
            base=base,
            space=space,
            trials=t.get("trials", 10),
            metric=t.get("metric", "accuracy"),
            sampler=t.get("sampler", "tpe"),
            pruner=t.get("pruner", "none"),
            description=f"cell {cell.name} of study {study.name}",
            source=f"{study.source}: tune (cell {cell.name!r})",
        )
    if not out:
        raise ConfigError(f"{where}: no cell has a space (give `space` or `cells`)")
    return out


def tuned_spec(
    study,
    root: str | Path,
    overrides: dict[str, Any] | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
):
    """Run (or resume) each cell's search and return the study with every tuned cell set to its
    best values (grid cells become named cells); writes ``tuning.json`` in the study folder."""
    from ..artifacts import atomic_write_json
    from . import require_optuna
    from .runner import run_worker
    from .storage import TuneError, open_storage, open_study

    require_optuna()
    overrides = {_norm(k): v for k, v in (overrides or {}).items() if v is not None}
    searches = cell_searches(study, overrides)
    root = Path(root).resolve()
    cells, record = [], {}
    for cell in study.expand():
        options = dict(cell.options)
        search = searches.get(cell.name)
        if search is not None:
            folder = root / TUNE_DIR / search.name.split(".", 1)[1]
            echo(f"tuning cell {cell.name}: {search.trials} trials -> {folder}")
            run_worker(search, folder, threads=threads, echo=echo)
            tstudy = open_study(search, open_storage(f"sqlite:///{folder / 'tune.db'}"), create=False)
            done = [t for t in tstudy.get_trials(deepcopy=False) if t.value is not None and t.state.name == "COMPLETE"]
            if not done:
                raise TuneError(f"{search.source}: no trial completed; see {folder}")
            best = tstudy.best_trial
            options = {k: v for k, v in options.items() if _norm(k) not in best.params}
            options.update(best.params)
            record[cell.name] = {
                "params": best.params,
                f"validation_{search.metric}": best.value,
                "trial": best.number,
                "trials": len(done),
                "search_seconds": round(
                    sum(float(t.user_attrs.get("seconds", 0)) for t in tstudy.get_trials(deepcopy=False)), 1
                ),
                "folder": str(folder.relative_to(root)),
                "search_base": search.base,
            }
            echo(f"cell {cell.name}: best {best.params} (validation {search.metric} {best.value:.4f})")
        cells.append({"name": cell.name, **options})
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / TUNING_FILE, record)
    return dataclasses.replace(study, grid={}, cells=cells, tune=None)


def tune_first(study, args, overrides: dict[str, Any]):
    """``loralab study run`` on a study with ``tune:``: with ``--dry-run``, say what would be
    searched and plan the untuned cells; else run the searches and return the tuned study."""
    from ..study.plan import DEFAULT_OUT_ROOT

    searches = cell_searches(study, overrides)
    if args.dry_run:
        for name, search in searches.items():
            print(
                f"tune cell {name}: {search.trials} trials over {', '.join(p.name for p in search.params)} "
                f"(search options: {search.base}); the table below shows the cells before tuning"
            )
        return study
    root = Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / study.name
    return tuned_spec(study, root, overrides, threads=args.threads, echo=lambda s: print(s, flush=True))

"""Tuned studies: a study file's ``tune:`` key (its format and checks: :mod:`loralab.study.tuned`)
searches each cell's setting first (one Optuna search per cell), then the study runs its seeds at
each cell's best setting. Searches live in ``<study folder>/tune/<cell>/`` (SQLite, resumable);
``tuning.json`` records each cell's best values, validation score and search cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loralab.experiments.folder import TUNE_DIR, TUNING_FILE
from loralab.experiments.options import norm
from loralab.study.tuned import cell_searches


def tuned_spec(
    study,
    root: str | Path,
    overrides: dict[str, Any] | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
):
    """Run (or resume) each cell's search and return the study with every tuned cell set to its
    best values (grid cells become named cells); writes ``tuning.json`` in the study folder."""
    from loralab.files import atomic_write_json
    from loralab.tune import require_optuna
    from loralab.tune.runner import run_worker
    from loralab.tune.storage import TuneError, open_storage, open_study

    require_optuna()
    overrides = _given(overrides)
    searches = cell_searches(study, overrides)
    root = Path(root).resolve()
    record = {}
    for cell in study.expand():
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
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / TUNING_FILE, record)
    return _with_best(study, {name: r["params"] for name, r in record.items()})


def _given(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The command-line overrides that were given (``--model``, ``--data-dir``), by normalised name."""
    return {norm(k): v for k, v in (overrides or {}).items() if v is not None}


def _with_best(study, best: dict[str, dict[str, Any]]):
    """The study with each searched cell's options replaced by its best values (grid cells become
    named cells, the ``tune:`` key is dropped)."""
    cells = []
    for cell in study.expand():
        options = dict(cell.options)
        if cell.name in best:
            options = {k: v for k, v in options.items() if norm(k) not in best[cell.name]}
            options.update(best[cell.name])
        cells.append({"name": cell.name, **options})
    return dataclasses.replace(study, grid={}, cells=cells, tune=None)


def recorded_spec(study, root: str | Path, overrides: dict[str, Any] | None = None):
    """The tuned study as ``tuning.json`` in ``root`` records it, when it holds every searched cell
    (what ``--dry-run`` plans once the searches are done, e.g. after ``study unpack``); else None."""
    from loralab.files import read_json

    path = Path(root) / TUNING_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    searches = cell_searches(study, _given(overrides))
    if not set(searches) <= set(record):
        return None
    return _with_best(study, {name: record[name]["params"] for name in searches})


def tune_first(study, args, overrides: dict[str, Any]):
    """``loralab study run`` on a study with ``tune:``: with ``--dry-run``, say what would be
    searched and plan the untuned cells; else run the searches and return the tuned study."""
    from loralab.study.plan import DEFAULT_OUT_ROOT

    searches = cell_searches(study, overrides)
    root = Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / study.name
    if args.dry_run:
        recorded = recorded_spec(study, root, overrides)
        if recorded is not None:
            print(f"tune: every cell's search is done ({root / TUNING_FILE}); the table below shows the tuned cells")
            return recorded
        for name, search in searches.items():
            print(
                f"tune cell {name}: {search.trials} trials over {', '.join(p.name for p in search.params)} "
                f"(search options: {search.base}); the table below shows the cells before tuning"
            )
        return study
    return tuned_spec(study, root, overrides, threads=args.threads, echo=lambda s: print(s, flush=True))

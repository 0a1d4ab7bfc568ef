"""The plan of a study: its spec bound to a folder, every (cell, seed) as a run with an id, a
directory and the equivalent ``loralab train`` command.

Paths in the options are made absolute and ``$LORALAB_DATA_DIR`` is written out when the plan is
made, so the runs depend neither on the working directory nor on the environment.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loralab.config import DATA_DIR_ENV, RunConfig
from loralab.errors import ConfigError
from loralab.experiments.identity import hashed_options, run_id
from loralab.experiments.options import norm
from loralab.study.spec import Cell, StudySpec

#: Options holding paths: made absolute when the plan is built, so runs do not depend on the cwd.
PATH_OPTIONS = ("data_dir", "train_file", "validation_file", "test_file")
DEFAULT_OUT_ROOT = "studies_out"


@dataclass(frozen=True)
class PlannedRun:
    """One (cell, seed) of a study: its id and its complete run configuration."""

    id: str
    cell: str
    seed: int
    config: RunConfig

    def train_flags(self) -> list[str]:
        return train_flags(self.config)

    def command(self) -> list[str]:
        """The equivalent ``loralab train`` command line."""
        return ["loralab", "train", *self.train_flags()]


@dataclass
class StudyPlan:
    """A validated spec bound to a study folder: the cells and the runs to execute."""

    spec: StudySpec
    root: Path
    cells: list[Cell]
    runs: list[PlannedRun]

    @property
    def baseline(self) -> str:
        return self.spec.baseline_cell

    def cell_configs(self) -> dict[str, dict[str, Any]]:
        """Each cell's resolved options (flat, without the seed and the study-managed keys)."""
        out = {}
        for cell in self.cells:
            flat = hashed_options(self.spec.cell_config(cell).to_flat())
            flat.pop("seed", None)
            out[cell.name] = flat
        return out

    def to_json(self) -> dict[str, Any]:
        configs = self.cell_configs()
        return {
            "schema_version": 1,
            "name": self.spec.name,
            "source": self.spec.source,
            "spec": self.spec.to_dict(),
            "baseline": self.baseline,
            "cells": [{"name": c.name, "options": c.options, "config": configs[c.name]} for c in self.cells],
            "runs": [
                {"id": r.id, "cell": r.cell, "seed": r.seed, "dir": f"runs/{r.id}", "command": r.command()}
                for r in self.runs
            ],
        }


def make_plan(spec: StudySpec, root: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyPlan:
    """Bind ``spec`` to its folder (default ``studies_out/<name>``) and resolve every run.

    ``overrides`` (``--model``, ``--data-dir``) replace options of ``base``; a cell or grid that
    sets the same option is an error. The data directory falls back to ``$LORALAB_DATA_DIR`` and
    is stored as an absolute path in every run, so the runs do not depend on the environment.
    """
    overrides = {norm(k): v for k, v in (overrides or {}).items() if v is not None}
    varied = {norm(k) for k in spec.grid} | {norm(k) for c in spec.cells for k in c if k != "name"}
    for key in overrides:
        if key in varied:
            raise ConfigError(f"{spec.source}: --{key.replace('_', '-')} cannot be given: the study varies {key!r}")
    base = {norm(k): v for k, v in spec.base.items()}
    base.update(overrides)
    named = base.get("dataset") or base.get("glue")  # a --dataset takes the place of the data directory
    if not base.get("data_dir") and not base.get("train_file") and not named and os.environ.get(DATA_DIR_ENV):
        base["data_dir"] = os.environ[DATA_DIR_ENV]
    for key in PATH_OPTIONS:
        if base.get(key):
            base[key] = _absolute(base[key])
    if isinstance(base.get("model"), str) and Path(base["model"]).expanduser().exists():
        base["model"] = _absolute(base["model"])
    spec = dataclasses.replace(spec, base=base)
    root = Path(root) if root is not None else Path(DEFAULT_OUT_ROOT) / spec.name
    root = Path(_absolute(str(root)))
    cells = spec.expand()
    runs = []
    for cell in cells:
        for seed in spec.seeds:
            config = spec.cell_config(cell, seed)
            rid = run_id(cell.name, seed, config.to_flat())
            config = config.override({"output_dir": str(root / "runs" / rid), "progress": False})
            runs.append(PlannedRun(rid, cell.name, seed, config))
    return StudyPlan(spec, root, cells, runs)


def train_flags(config: RunConfig) -> list[str]:
    """``loralab train`` flags that rebuild ``config``: every option that differs from its default."""
    defaults = RunConfig().to_flat()
    flags: list[str] = []
    for key, value in config.to_flat().items():
        if value == defaults[key] or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            flags += [flag, ",".join(str(v) for v in value)]
        elif isinstance(value, float):
            flags += [flag, repr(value)]
        else:
            flags += [flag, str(value)]
    return flags


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))

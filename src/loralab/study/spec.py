"""The study YAML and the typed :class:`StudySpec` it is read into (its plan: :mod:`.plan`).

A study file (every key but ``name`` optional)::

    name: ref000-frozen-vs-lora      # folder name (default studies_out/<name>)
    description: head vs LoRA r8/r16 # free text, shown in the report
    base: {epochs: 3}                # flat run options shared by every cell (see RunConfig)
    grid: {rank: [8, 16]}            # option -> values; the cartesian product gives the cells
    cells:                           # named cells, for designs that are not a product
      - {name: head, method: head}
    seeds: [1, 2, 3]                 # every cell runs once per seed
    baseline: head                   # the cell the others are compared with (default: the first)

Cells: with ``grid`` alone, one cell per grid point, named ``rank=8,method=lora`` (grid order);
with ``cells`` alone, the named cells; with both, every named cell crossed with every grid point
(``head,rank=8``); with neither, one cell called ``base``. A cell's options are ``base``, then its
grid values, then its own options. Every key is checked before anything runs: unknown top-level
keys and unknown option names are :class:`ConfigError` naming the key, and every cell is built
into a :class:`RunConfig` once, so a bad value fails here and not an hour into the study.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralab.config import RunConfig
from loralab.errors import ConfigError
from loralab.experiments.identity import resolved_identity
from loralab.experiments.options import check_name_and_description, check_options, check_top_level, norm, read_yaml

#: The keys a study file may have at the top level.
TOP_LEVEL_KEYS = ("name", "description", "base", "grid", "cells", "seeds", "baseline", "tune")
#: Run options the study sets itself; a study file that sets them is an error (with the reason).
MANAGED_OPTIONS = {
    "seed": "list the seeds in the top-level `seeds` key",
    "output_dir": "the study places every run under <study folder>/runs/<id>",
    "overwrite": "finished runs are skipped, never overwritten",
    "progress": "study runs write to a log file, without a progress bar",
    "resume": "a study resumes its killed runs from their checkpoints by itself",
}


@dataclass(frozen=True)
class Cell:
    """One condition of the study: a name and the options it sets on top of ``base``."""

    name: str
    options: dict[str, Any]


@dataclass
class StudySpec:
    """A study as written in its YAML file; validates itself on construction."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [42])
    baseline: str | None = None
    description: str = ""
    tune: dict[str, Any] | None = None  #: search each cell's setting first (loralab.tune.study)
    source: str = "study"  #: where the spec came from (a path), used in error messages

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation --------------------------------------------------------------------------
    def _err(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {msg}")

    def validate(self) -> None:
        check_name_and_description(self.name, self.description, self._err)
        if not isinstance(self.base, dict):
            raise self._err("`base` must be a mapping of run options")
        self._check_options(self.base, "base")
        if not isinstance(self.grid, dict):
            raise self._err("`grid` must be a mapping: option -> list of values")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise self._err(f"grid: {key!r} must be a non-empty list of values")
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if len(set(seen)) != len(seen):
                raise self._err(f"grid: {key!r} lists a value twice")
        self._check_options(self.grid, "grid")
        if not isinstance(self.cells, list):
            raise self._err("`cells` must be a list of mappings, each with a `name`")
        names: set[str] = set()
        for i, cell in enumerate(self.cells):
            if not isinstance(cell, dict):
                raise self._err(f"cells[{i}] must be a mapping with a `name` and run options")
            name = cell.get("name")
            if not isinstance(name, str) or not name.strip():
                raise self._err(f"cells[{i}] needs a `name` (text)")
            if name in names:
                raise self._err(f"two cells are named {name!r}")
            names.add(name)
            options = {k: v for k, v in cell.items() if k != "name"}
            self._check_options(options, f"cell {name!r}")
            clash = sorted(norm(k) for k in options if norm(k) in {norm(g) for g in self.grid})
            if clash:
                raise self._err(f"cell {name!r} sets {clash[0]!r}, which the grid also varies")
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds)
        ):
            raise self._err(f"`seeds` must be a non-empty list of integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise self._err(f"`seeds` lists a seed twice: {self.seeds}")
        cells = self.expand()
        if self.baseline is not None and self.baseline not in {c.name for c in cells}:
            raise self._err(f"baseline {self.baseline!r} is not a cell (cells: {', '.join(c.name for c in cells)})")
        seen_configs: dict[str, str] = {}
        for cell in cells:
            key = json.dumps(resolved_identity(self.cell_config(cell).to_flat()), sort_keys=True, default=str)
            if key in seen_configs:
                raise self._err(f"cells {seen_configs[key]!r} and {cell.name!r} are the same configuration")
            seen_configs[key] = cell.name
        if self.tune is not None:
            from loralab.study.tuned import cell_searches

            cell_searches(self)

    def _check_options(self, options: dict[str, Any], where: str) -> None:
        first = {k: _first(v) for k, v in options.items()} if where == "grid" else options
        check_options(first, where, MANAGED_OPTIONS, "study", self._err)

    # ---- expansion ---------------------------------------------------------------------------
    def expand(self) -> list[Cell]:
        """The cells, in file order (named cells outer, grid inner)."""
        points: list[tuple[str, dict[str, Any]]] = [("", {})]
        if self.grid:
            keys = list(self.grid)
            points = [
                (
                    ",".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values, strict=True)),
                    dict(zip(keys, values, strict=True)),
                )
                for values in itertools.product(*(self.grid[k] for k in keys))
            ]
        named = [(c["name"], {k: v for k, v in c.items() if k != "name"}) for c in self.cells] or [("", {})]
        out = []
        for (cell_name, cell_opts), (grid_name, grid_opts) in itertools.product(named, points):
            name = ",".join(p for p in (cell_name, grid_name) if p) or "base"
            out.append(Cell(name, {**grid_opts, **cell_opts}))
        return out

    def cell_config(self, cell: Cell, seed: int | None = None) -> RunConfig:
        """The cell's run configuration (``base`` + the cell's options [+ the seed])."""
        try:
            config = RunConfig.from_flat(self.base)
        except ConfigError as e:
            raise self._err(f"base: {e}") from None
        try:
            config = config.override(cell.options)
        except ConfigError as e:
            raise self._err(f"cell {cell.name!r}: {e}") from None
        return config if seed is None else config.override({"seed": seed})

    @property
    def baseline_cell(self) -> str:
        return self.baseline if self.baseline is not None else self.expand()[0].name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "base": self.base,
            "grid": self.grid,
            "cells": self.cells,
            "seeds": self.seeds,
            "baseline": self.baseline,
            **({"tune": self.tune} if self.tune is not None else {}),
        }

    @classmethod
    def from_dict(cls, values: Any, source: str = "study") -> StudySpec:
        check_top_level(
            values, source, TOP_LEVEL_KEYS, ("name",), "a study", "name, base, grid, cells, seeds, baseline"
        )
        kw = {k: values[k] for k in TOP_LEVEL_KEYS if k in values and values[k] is not None}
        return cls(**kw, source=source)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study YAML file."""
    return StudySpec.from_dict(read_yaml(path, "study file"), source=str(path))


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else values


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(_fmt(v) for v in value)
    if value is None:
        return "none"
    return str(value)

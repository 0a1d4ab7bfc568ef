"""The study YAML, the typed :class:`StudySpec` it is read into, and the plan it expands to.

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

import dataclasses
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DATA_DIR_ENV, DEFAULT_LR, OUTPUT_OPTIONS, TARGET_PRESETS, RunConfig
from ..errors import ConfigError

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
#: Options left out of the run id's hash: where and how a run is written or watched (``report_to``), not
#: what it computes. ``grad_accum`` says how each global batch is computed, not what: the same
#: optimisation up to float summation order, like the number of processes.
NOT_HASHED = (*OUTPUT_OPTIONS, "grad_accum", "report_to")
#: Options holding paths: made absolute when the plan is built, so runs do not depend on the cwd.
PATH_OPTIONS = ("data_dir", "train_file", "validation_file", "test_file")
DEFAULT_OUT_ROOT = "studies_out"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name_and_description(name: Any, description: Any, err) -> None:
    """The checks a study file and a search file share: a folder-safe ``name``, a text ``description``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise err(f"`name` must be a folder-safe name (letters, digits, . _ -), got {name!r}")
    if not isinstance(description, str):
        raise err("`description` must be text")


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
            clash = sorted(_norm(k) for k in options if _norm(k) in {_norm(g) for g in self.grid})
            if clash:
                raise self._err(f"cell {name!r} sets {clash[0]!r}, which the grid also varies")
        if (not isinstance(self.seeds, list) or not self.seeds
                or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds)):
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
            from ..tune.study import cell_searches  # noqa: PLC0415

            cell_searches(self)

    def _check_options(self, options: dict[str, Any], where: str) -> None:
        for key in options:
            if not isinstance(key, str):
                raise self._err(f"{where}: option names must be text, got {key!r}")
            if _norm(key) in MANAGED_OPTIONS:
                raise self._err(f"{where}: option {key!r} is set by the study ({MANAGED_OPTIONS[_norm(key)]})")
        try:
            RunConfig().override({k: _first(v) if where == "grid" else v for k, v in options.items()})
        except ConfigError as e:
            raise self._err(f"{where}: {e}") from None

    # ---- expansion ---------------------------------------------------------------------------
    def expand(self) -> list[Cell]:
        """The cells, in file order (named cells outer, grid inner)."""
        points: list[tuple[str, dict[str, Any]]] = [("", {})]
        if self.grid:
            keys = list(self.grid)
            points = [
                (",".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values, strict=True)),
                 dict(zip(keys, values, strict=True)))
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
        return {"name": self.name, "description": self.description, "base": self.base, "grid": self.grid,
                "cells": self.cells, "seeds": self.seeds, "baseline": self.baseline,
                **({"tune": self.tune} if self.tune is not None else {})}

    @classmethod
    def from_dict(cls, values: Any, source: str = "study") -> StudySpec:
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: a study file must be a mapping (name, base, grid, cells, seeds, baseline)")
        unknown = [k for k in values if k not in TOP_LEVEL_KEYS]
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (a study has: {', '.join(TOP_LEVEL_KEYS)})")
        if "name" not in values:
            raise ConfigError(f"{source}: missing key 'name'")
        kw = {k: values[k] for k in TOP_LEVEL_KEYS if k in values and values[k] is not None}
        return cls(**kw, source=source)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study YAML file."""
    import yaml  # noqa: PLC0415

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    return StudySpec.from_dict(values, source=str(path))


# ---------------------------------------------------------------------------------------------
# The plan: every (cell, seed) as a run with an id and a directory
# ---------------------------------------------------------------------------------------------


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
            flat = _identity(self.spec.cell_config(cell).to_flat())
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
    overrides = {_norm(k): v for k, v in (overrides or {}).items() if v is not None}
    varied = {_norm(k) for k in spec.grid} | {_norm(k) for c in spec.cells for k in c if k != "name"}
    for key in overrides:
        if key in varied:
            raise ConfigError(f"{spec.source}: --{key.replace('_', '-')} cannot be given: the study varies {key!r}")
    base = {_norm(k): v for k, v in spec.base.items()}
    base.update(overrides)
    if not base.get("data_dir") and not base.get("train_file") and os.environ.get(DATA_DIR_ENV):
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


def _identity(flat: dict[str, Any]) -> dict[str, Any]:
    """What a run computes: the flat options minus :data:`NOT_HASHED`, with the learning rate
    resolved (``lr: null`` means the method's default, so a changed default gives a new id and a
    cell that spells the default out is the same configuration as one that leaves it unset)."""
    # an option that is not set (None) adds nothing: a new option with a None default keeps every id
    out = {k: v for k, v in flat.items() if k not in NOT_HASHED and (v is not None or k == "lr")}
    if out.get("lr") is None and out.get("method") in DEFAULT_LR:
        out["lr"] = DEFAULT_LR[out["method"]]
    return out


def resolved_identity(flat: dict[str, Any]) -> dict[str, Any]:
    """The fully resolved run configuration a run id hashes: :func:`_identity` (the learning rate
    in force) and, for LoRA, the target modules as training resolves them: ``null`` is ``qv``,
    and a preset becomes the family's module names when the model's ``config.json`` is on disk
    (else the preset's names for every family, so a change of any family's preset still counts)."""
    out = _identity(flat)
    if out.get("method") == "lora":
        out["target_modules"] = _resolved_targets(out.get("model"), out.get("target_modules"))
    return out


def _resolved_targets(model: Any, names: list[str] | None) -> Any:
    from ..backbones import FAMILIES  # noqa: PLC0415 - imports torch: only when a plan is made
    from ..methods import resolve_targets  # noqa: PLC0415

    names = list(names) if names else None
    family = _local_model_type(model)
    if family in FAMILIES:
        return resolve_targets(names, FAMILIES[family])
    if not names or set(names) & set(TARGET_PRESETS):
        return {name: resolve_targets(names, fam) for name, fam in sorted(FAMILIES.items())}
    return names


def _local_model_type(model: Any) -> str | None:
    """``model_type`` from the model's ``config.json`` if it is a local folder (or the offline
    default alias); None for a hub id or an unreadable folder."""
    from ..backbones import resolve_model  # noqa: PLC0415

    try:
        path = Path(resolve_model(str(model))) / "config.json"
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") if path.is_file() else None
    except (ConfigError, OSError, ValueError, AttributeError):
        return None


def _norm(key: Any) -> str:
    return str(key).replace("-", "_")


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


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))

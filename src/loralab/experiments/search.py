"""The search file (``loralab tune SEARCH.yaml``) and the typed :class:`TuneSpec` it is read into.

A search file (every key but ``name`` and ``space`` optional)::

    name: lora-minilm                 # folder name (default tunes_out/<name>) and Optuna study name
    description: LoRA lr/rank/alpha   # free text, shown in the report
    base: {train_size: 2000, epochs: 1}   # flat run options shared by every trial (as in studies)
    space:                            # run option -> distribution
      lr: {type: loguniform, low: 1e-4, high: 3e-3}
      dropout: {type: uniform, low: 0.0, high: 0.3}      # optional step
      rank: {type: int, low: 4, high: 32, log: true}     # optional step / log
      target_modules: [qv, all-linear]                   # a list = categorical
    metric: accuracy                  # a validation metric (--metric's names); default: the runs' own; never test
    sampler: tpe                      # tpe (default), random or grid; or {type: tpe, seed: 0}
    pruner: median                    # none (default), median or hyperband; or {type: median, ...}
    trials: 30                        # budget of finished (complete or pruned) trials
    final: {train_size: null}         # options for `tune report --final-seeds` (default: full data)

Every key is checked before anything runs; an error names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralab.config import RunConfig
from loralab.config.glue import METRIC_DIRECTIONS, check_metric
from loralab.errors import ConfigError
from loralab.experiments.options import check_name_and_description, check_options, check_top_level, norm, read_yaml

TOP_LEVEL_KEYS = ("name", "description", "base", "space", "metric", "sampler", "pruner", "trials", "final")
#: Run options a search sets itself.
MANAGED_OPTIONS = {
    "seed": "trials share one seed (set it in `base`); `tune report --final-seeds` varies it",
    "output_dir": "each trial is written to <tune folder>/trials/trial-NNNN",
    "overwrite": "trials are never overwritten",
    "progress": "trials run without a progress bar",
}
DIST_TYPES = ("loguniform", "uniform", "int", "categorical")
#: Objective metrics (on the validation split) and the direction each is optimised in (``--metric``'s).
METRICS = METRIC_DIRECTIONS
#: The ``metrics.csv`` column of the trials' selection metric, logged after every epoch for pruning: a
#: trial selects its best epoch on the search's objective.
EPOCH_METRIC_COLUMN = "val_metric"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
DEFAULT_OUT_ROOT = "tunes_out"
PATH_OPTIONS = ("data_dir", "train_file", "validation_file", "test_file")


@dataclass(frozen=True)
class Param:
    """One dimension of the space."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.type == "loguniform")

    def describe(self) -> str:
        if self.type == "categorical":
            return "one of " + ", ".join(map(str, self.choices))
        kind = {"loguniform": "log-uniform", "uniform": "uniform", "int": "integer"}[self.type]
        extra = (f", step {self.step:g}" if self.step else "") + (", log" if self.log and self.type == "int" else "")
        return f"{kind} in [{self.low:g}, {self.high:g}]{extra}"


@dataclass
class TuneSpec:
    """A search as written in its YAML file; validates itself on construction."""

    name: str
    space: dict[str, Any]
    base: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    metric: str | None = None  # None: the runs' own selection metric (base's --metric, --glue, task)
    sampler: Any = "tpe"
    pruner: Any = "none"
    trials: int = 20
    final: dict[str, Any] = field(default_factory=lambda: {"train_size": None})
    source: str = "search"

    def __post_init__(self) -> None:
        self.params: list[Param] = []
        self.validate()

    def _err(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {msg}")

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        check_name_and_description(self.name, self.description, self._err)
        for key, value in (("base", self.base), ("final", self.final)):
            if not isinstance(value, dict):
                raise self._err(f"`{key}` must be a mapping of run options")
            self._check_options(value, key)
        if not isinstance(self.space, dict) or not self.space:
            raise self._err("`space` must be a mapping: run option -> distribution (at least one)")
        self.params = [self._param(k, v) for k, v in self.space.items()]
        if self.metric is not None and self.metric not in METRICS:
            raise self._err(f"`metric` must be one of {', '.join(METRICS)} (on validation), got {self.metric!r}")
        try:
            base_config = RunConfig.from_flat(self.base)
            self.metric = self.metric or base_config.metric
            check_metric(self.metric, base_config.data.task)
        except ConfigError as e:
            raise self._err(f"metric: {e}") from None
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise self._err(f"`trials` must be a positive integer, got {self.trials!r}")
        sampler, _ = self.sampler_options()
        pruner, _ = self.pruner_options()
        if sampler == "grid":
            ranged = [p.name for p in self.params if p.type != "categorical"]
            if ranged:
                raise self._err(f"sampler grid: space.{ranged[0]} must be a list of values (grid needs choices)")
        self.trial_config({p.name: p.choices[0] if p.choices else p.low for p in self.params})

    def _check_options(self, options: dict, where: str) -> None:
        check_options(options, where, MANAGED_OPTIONS, "search", self._err)

    def _param(self, key: Any, value: Any) -> Param:
        where = f"space.{key}"
        if not isinstance(key, str):
            raise self._err(f"space: option names must be text, got {key!r}")
        name = norm(key)
        if name in MANAGED_OPTIONS:
            raise self._err(f"{where}: set by the search ({MANAGED_OPTIONS[name]})")
        if name in {norm(k) for k in self.base}:
            raise self._err(f"{where}: also set in `base` (an option is either fixed or searched)")
        if isinstance(value, list):
            value = {"type": "categorical", "choices": value}
        if not isinstance(value, dict):
            raise self._err(f"{where}: must be a list of values or a mapping with `type` ({', '.join(DIST_TYPES)})")
        kind = value.get("type")
        if kind not in DIST_TYPES:
            raise self._err(f"{where}: `type` must be one of {', '.join(DIST_TYPES)}, got {kind!r}")
        allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "step", "log"}
        if kind == "loguniform":
            allowed.discard("log")
        extra = sorted(set(value) - allowed)
        if extra:
            raise self._err(
                f"{where}: unknown key {extra[0]!r} for type {kind} (allowed: {', '.join(sorted(allowed))})"
            )
        if kind == "categorical":
            choices = value.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self._err(f"{where}: `choices` must be a non-empty list")
            choices = [",".join(map(str, c)) if isinstance(c, list) else c for c in choices]  # lists: comma-joined
            if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
                raise self._err(f"{where}: choices must be numbers, text, true/false or lists of names")
            if len({json.dumps(c) for c in choices}) != len(choices):
                raise self._err(f"{where}: a choice is listed twice")
            for c in choices:
                self._check_value(name, c, where)
            return Param(name, kind, choices=tuple(choices))
        num: dict[str, float | None] = {}
        for k in ("low", "high", "step"):
            v = value.get(k)
            if k != "step" and v is None:
                raise self._err(f"{where}: needs `{k}`")
            if isinstance(v, str):  # YAML reads 1e-4 (no dot) as text
                try:
                    v = float(v)
                except ValueError:
                    raise self._err(f"{where}: `{k}` must be a number, got {v!r}") from None
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise self._err(f"{where}: `{k}` must be a number, got {v!r}")
            if v is not None and kind == "int" and float(v) != int(v):
                raise self._err(f"{where}: `{k}` must be an integer for type int, got {v!r}")
            num[k] = v
        low, high, step = num["low"], num["high"], num["step"]
        if low >= high:
            raise self._err(f"{where}: `low` ({low:g}) must be below `high` ({high:g})")
        if step is not None and step <= 0:
            raise self._err(f"{where}: `step` must be positive")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise self._err(f"{where}: `log` must be true or false")
        if (kind == "loguniform" or log) and low <= 0:
            raise self._err(f"{where}: a log scale needs `low` > 0, got {low:g}")
        if log and step is not None:
            raise self._err(f"{where}: `step` and `log` cannot be combined")
        for v in (low, high):
            self._check_value(name, int(v) if kind == "int" else float(v), where)
        return Param(name, kind, float(low), float(high), step, bool(log))

    def _check_value(self, name: str, value: Any, where: str) -> None:
        try:
            RunConfig.from_flat(self.base).override({name: value})
        except ConfigError as e:
            raise self._err(f"{where}: {value!r}: {e}") from None

    # ---- options -----------------------------------------------------------------------------
    def sampler_options(self) -> tuple[str, dict]:
        return self._typed("sampler", self.sampler, SAMPLERS, {"seed", "n_startup_trials"})

    def pruner_options(self) -> tuple[str, dict]:
        return self._typed(
            "pruner", self.pruner, PRUNERS, {"n_startup_trials", "n_warmup_steps", "min_resource", "reduction_factor"}
        )

    def _typed(self, key: str, value: Any, kinds: tuple, allowed: set) -> tuple[str, dict]:
        if value is None:
            value = kinds[0]
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict) or value.get("type") not in kinds:
            raise self._err(f"`{key}` must be one of {', '.join(kinds)} (or a mapping with `type`), got {value!r}")
        opts = {k: v for k, v in value.items() if k != "type"}
        for k, v in opts.items():
            if k not in allowed:
                raise self._err(f"{key}: unknown option {k!r} (allowed: {', '.join(sorted(allowed))})")
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise self._err(f"{key}.{k} must be a non-negative integer, got {v!r}")
        return value["type"], opts

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def trial_config(self, params: dict[str, Any]) -> RunConfig:
        """``base`` + a trial's sampled values (not yet placed in a folder)."""
        try:
            config = RunConfig.from_flat(self.base).override(params)
            if config.metric != self.metric:  # trials select their best epoch on the objective
                config = config.override({"metric": self.metric})
            return config
        except ConfigError as e:
            raise self._err(f"trial {params}: {e}") from None

    def grid(self) -> dict[str, list]:
        return {p.name: list(p.choices) for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(p.choices) for p in self.params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "base": self.base,
            "space": self.space,
            "metric": self.metric,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "trials": self.trials,
            "final": self.final,
        }

    def fingerprint(self) -> str:
        """What the workers of a shared search must agree on: base (but data paths), space, metric,
        sampler, pruner."""
        keep = {k: v for k, v in self.to_dict().items() if k in ("space", "metric", "sampler", "pruner")}
        # data paths may differ between machines sharing a search
        keep["base"] = {k: v for k, v in self.base.items() if norm(k) not in PATH_OPTIONS}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: Any, source: str = "search") -> TuneSpec:
        check_top_level(values, source, TOP_LEVEL_KEYS, ("name", "space"), "a search", "name, base, space, ...")
        kw = {k: values[k] for k in TOP_LEVEL_KEYS if k in values and (values[k] is not None or k == "final")}
        if kw.get("final") is None:
            kw.pop("final", None)
        return cls(**kw, source=source)


def load_spec(path: str | Path) -> TuneSpec:
    """Read and validate a search YAML file."""
    return TuneSpec.from_dict(read_yaml(path, "search file"), source=str(path))

"""One run's configuration: the four option groups together, their flat view, and the options that
say where a run is written rather than what it computes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from loralab.config.choices import DEFAULT_LR
from loralab.config.coerce import coerce
from loralab.config.data import DataConfig
from loralab.config.glue import GLUE_TASKS, check_metric, preset_values, selection_metric
from loralab.config.method import MethodConfig
from loralab.config.model import ModelConfig
from loralab.config.train import TrainConfig
from loralab.errors import ConfigError

GROUPS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
}


@dataclass
class RunConfig:
    """One training run: the four groups together."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.normalize()
        self.validate()

    def normalize(self) -> None:
        """The rewrites of given options: ``none`` evaluates the untrained model, so its config says
        0 epochs whatever ``--epochs`` says (recorded as run, and hashed as such); ``--glue TASK``
        fills the options its preset sets that are left at their defaults (:mod:`.glue`)."""
        if self.method.method == "none":
            self.train.epochs = 0
        self._preset_filled: tuple[str, ...] = ()
        if self.data.glue is not None and self.data.glue in GLUE_TASKS:
            filled = []
            for name, value in preset_values(self.data.glue).items():
                group = self.train if name == "metric" else self.data
                if getattr(group, name) == _default(type(group), name):
                    setattr(group, name, value)
                    filled.append(name)
            self._preset_filled = tuple(filled)

    def validate(self) -> None:
        """Check every option and their combinations; changes nothing."""
        for group in GROUPS:
            getattr(self, group).validate()
        check_metric(self.train.metric, self.data.task)
        if self.method.method != "none" and self.train.epochs == 0:
            raise ConfigError(
                f"--epochs 0 trains nothing with --method {self.method.method}; "
                "to evaluate the untrained model use --method none"
            )

    @property
    def metric(self) -> str:
        """The validation metric that selects the best epoch: ``--metric`` or the task's default."""
        return selection_metric(self.train.metric, self.data.task)

    @property
    def lr(self) -> float:
        """The learning rate in force: ``train.lr`` or the method's default."""
        return self.train.lr if self.train.lr is not None else DEFAULT_LR[self.method.method]

    # ---- flat view -------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in GROUPS:
            out.update(dataclasses.asdict(getattr(self, group)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {group: dataclasses.asdict(getattr(self, group)) for group in GROUPS}

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> RunConfig:
        return cls().override(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (nested) — also accepts a flat mapping."""
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if key in GROUPS and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        return cls.from_flat(flat)

    def override(self, values: dict[str, Any]) -> RunConfig:
        """A new config with ``values`` (flat field names) replaced; unknown keys are errors."""
        groups = {g: dataclasses.asdict(getattr(self, g)) for g in GROUPS}
        owner = field_owner()
        for name in getattr(self, "_preset_filled", ()):  # filled again from the (new) preset
            groups[owner[name]][name] = _default(GROUPS[owner[name]], name)
        for key, value in values.items():
            norm = key.replace("-", "_")
            if norm not in owner:
                raise ConfigError(f"unknown option {key!r}")
            groups[owner[norm]][norm] = coerce(GROUPS[owner[norm]], norm, value)
        return RunConfig(**{g: GROUPS[g](**groups[g]) for g in GROUPS})


#: Options that say where and how a run is written, not what it computes: a resumed run may
#: change them (checkpoint.py), and a study's run id leaves them out (study/identity.py).
OUTPUT_OPTIONS = ("output_dir", "overwrite", "progress", "resume", "checkpoint_every", "keep_checkpoints")
#: Options a replayed ``config.json`` does not carry over: where the original run was written.
NOT_REPLAYED = ("output_dir", "overwrite", "resume")


def _default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the option group ``cls``."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def field_owner() -> dict[str, str]:
    """Map each flat field name to its group."""
    return {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}

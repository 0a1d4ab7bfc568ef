"""Typed, self-validating run configuration.

A run is described by one :class:`RunConfig` made of four groups (data, model, method, train).
Every field name is unique across groups, so a run can also be described by a *flat* mapping
(``{"method": "lora", "rank": 16, "train_size": 1000}``): that is what the CLI flags, the study
grids and ``config.json`` use. All defaults live in this package, with a comment each; nothing else in the
package invents a default.

The package's modules: ``choices`` (value sets and method-dependent defaults), one module per
group (``data``, ``model``, ``method``, ``train``), ``run`` (RunConfig and its flat view),
``coerce`` (typed values from strings) and ``files`` (``--config FILE``).
"""

from loralab.config.choices import (
    DATA_DIR_ENV,
    DEFAULT_LR,
    DEFAULT_TARGETS,
    IMPLS,
    LORA_INITS,
    METHODS,
    PRECISIONS,
    TARGET_PRESETS,
    TASKS,
)
from loralab.config.coerce import coerce, field_type
from loralab.config.data import DataConfig
from loralab.config.files import read_config_file
from loralab.config.method import MethodConfig
from loralab.config.model import ModelConfig
from loralab.config.run import GROUPS, NOT_REPLAYED, OUTPUT_OPTIONS, RunConfig, field_owner
from loralab.config.train import TrainConfig

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_LR",
    "DEFAULT_TARGETS",
    "GROUPS",
    "IMPLS",
    "LORA_INITS",
    "METHODS",
    "NOT_REPLAYED",
    "OUTPUT_OPTIONS",
    "PRECISIONS",
    "TARGET_PRESETS",
    "TASKS",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "coerce",
    "field_owner",
    "field_type",
    "read_config_file",
]

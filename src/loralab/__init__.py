"""loralab: LoRA and baseline fine-tuning of transformer text classifiers, end to end.

    import loralab
    result = loralab.train(loralab.RunConfig.from_flat({"method": "lora", "rank": 8}))
    run = loralab.load_run(result.run_dir)
    run.predictor().predict(["a gorgeous, witty film"])

Names are imported lazily so that ``loralab --help`` does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

__version__ = importlib.metadata.version("loralab")  # one source: pyproject.toml

_EXPORTS = {
    "train": "training.run",
    "load_run": "training.run",
    "inspect_params": "training.run",
    "Run": "training.run",
    "RunResult": "training.run",
    "RunConfig": "config",
    "DataConfig": "config",
    "ModelConfig": "config",
    "MethodConfig": "config",
    "TrainConfig": "config",
    "LoralabError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "RunDirError": "errors",
}
__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "LoralabError",
    "MethodConfig",
    "ModelConfig",
    "Run",
    "RunConfig",
    "RunDirError",
    "RunResult",
    "TrainConfig",
    "inspect_params",
    "load_run",
    "train",
]

if TYPE_CHECKING:
    from loralab.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
    from loralab.errors import ConfigError, DataError, LoralabError, RunDirError
    from loralab.training.run import Run, RunResult, inspect_params, load_run, train


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'loralab' has no attribute {name!r}")

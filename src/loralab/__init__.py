"""loralab: LoRA and baseline fine-tuning of transformer text classifiers, end to end.

    import loralab
    result = loralab.train(loralab.RunConfig.from_flat({"method": "lora", "rank": 8}))
    run = loralab.load_run(result.run_dir)
    run.predictor().predict(["a gorgeous, witty film"])
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Run, RunResult, inspect_params, load_run, train  # noqa: E402
from .config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .errors import ConfigError, DataError, LoralabError, RunDirError  # noqa: E402

__all__ = [
    "ConfigError", "DataConfig", "DataError", "LoralabError", "MethodConfig", "ModelConfig", "Run",
    "RunConfig", "RunDirError", "RunResult", "TrainConfig", "inspect_params", "load_run", "train",
]

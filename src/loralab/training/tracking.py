"""Experiment tracking for ``--report-to tensorboard,mlflow``: the resolved config as
hyper-parameters, per-step train loss and learning rate, per-epoch validation metrics, the final
metrics and (MLflow) the run directory as an artefact, through each library's own client.

Study runs are tagged with their study, cell and seed (the study executors set ``LORALAB_STUDY``,
``LORALAB_CELL`` and ``LORALAB_SEED``), so the tools' own UIs can group and compare them. Both are
optional extras (``pip install 'loralab[track]'``); a missing one is a one-line error before training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from loralab.errors import ConfigError

log = logging.getLogger(__name__)

REPORT_TO = ("tensorboard", "mlflow")
EXTRA_HINT = "pip install 'loralab[track]'"
#: Environment variables a study executor sets for its runs (turned into tags).
STUDY_TAGS = {"LORALAB_STUDY": "study", "LORALAB_CELL": "cell", "LORALAB_SEED": "seed"}


def check_report_to(names: list[str] | None) -> list[str]:
    """The tracker names, validated, with a one-line error if a library is missing."""
    names = [n for n in (names or []) if n and n != "none"]
    for name in names:
        if name not in REPORT_TO:
            raise ConfigError(f"--report-to: unknown tracker {name!r} (choose from {', '.join(REPORT_TO)})")
        module = "tensorboard" if name == "tensorboard" else "mlflow"
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"--report-to {name} needs the {module} package: {EXTRA_HINT}") from None
    return names


def study_tags() -> dict[str, str]:
    return {tag: os.environ[env] for env, tag in STUDY_TAGS.items() if os.environ.get(env)}


class Trackers:
    """The trackers of one run (main process only). ``log_history`` sends the rows not sent yet."""

    def __init__(self, names: list[str], run_name: str, logdir: Path, params: dict[str, Any]) -> None:
        self.names, self.sent = names, 0
        self.tb = self.mlflow = None
        tags = study_tags()
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(logdir / "tensorboard"))
            self.tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())))
            for key, value in tags.items():
                self.tb.add_text(f"tags/{key}", str(value))
        if "mlflow" in names:
            import mlflow

            self.mlflow = mlflow  # MLFLOW_TRACKING_URI or MLflow's default (sqlite:///mlflow.db in the cwd)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or tags.get("study") or "loralab"
            mlflow.set_experiment(experiment)
            mlflow.start_run(run_name=run_name, tags={"loralab.run": run_name, **tags})
            mlflow.log_params({k: _param(v) for k, v in params.items()})
        self.params = params

    def log_history(self, history: list[dict]) -> None:
        for row in history[self.sent :]:
            step = int(row["step"])
            values = {}
            if row["kind"] == "step":
                values = {"train/loss": row.get("train_loss"), "train/lr": row.get("lr")}
            elif row["kind"] == "epoch":
                values = {
                    "validation/accuracy": row.get("val_accuracy"),
                    "validation/loss": row.get("val_loss"),
                    "train/epoch_loss": row.get("train_loss"),
                    "epoch": row.get("epoch"),
                }
            values = {k: float(v) for k, v in values.items() if v not in (None, "")}
            if self.tb is not None:
                for key, value in values.items():
                    self.tb.add_scalar(key, value, step)
            if self.mlflow is not None and values:
                self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)
        self.sent = len(history)

    def finish(self, results: dict, run_dir: Path | None) -> None:
        """Final metrics; the finished run directory as an MLflow artefact; close everything."""
        final = {
            f"final/{split}_{m}": float(results[split][m])
            for split in ("validation", "test")
            if results.get(split)
            for m in ("accuracy", "f1", "loss")
        }
        final["final/trainable_params"] = float(results["params"]["trainable"])
        if self.tb is not None:
            self.tb.add_hparams({k: _param(v) for k, v in self.params.items()}, final, run_name="hparams")
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in final.items()})
            if run_dir is not None:
                self.mlflow.log_artifacts(str(run_dir), artifact_path="run")
            self.mlflow.end_run()

    def abort(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run(status="KILLED")


def _param(value: Any) -> Any:
    """Hyper-parameter values as the trackers take them (numbers and strings)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)

"""The GLUE task presets behind ``--glue TASK``, the selection metrics (``--metric``), and how a
preset fills a run's options.

A preset is data: the dataset on the Hugging Face hub (``nyu-mll/glue`` and the task's config), its
text columns, the task type and the metric GLUE reports for it. It fills only the options a run
leaves at their defaults, so any explicit option wins (``--glue mrpc --metric accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from loralab.errors import ConfigError

#: The hub dataset every GLUE preset reads.
GLUE_DATASET = "nyu-mll/glue"

#: ``--metric`` values and the direction each is optimised in. Classification: accuracy, F1 (the
#: positive class, id 1, for two labels; macro otherwise), macro F1, precision, recall, Matthews
#: correlation (``mcc``, CoLA's metric); regression: Pearson and Spearman correlation, mean squared
#: error; both: the validation loss.
METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "maximize",
    "f1": "maximize",
    "f1_macro": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "mcc": "maximize",
    "pearson": "maximize",
    "spearman": "maximize",
    "mse": "minimize",
    "loss": "minimize",
}
CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "precision", "recall", "mcc", "loss")
REGRESSION_METRICS = ("pearson", "spearman", "mse", "loss")
#: The metric a run selects on when ``--metric`` is not given and no preset names one.
DEFAULT_METRIC = {"classification": "accuracy", "regression": "pearson"}


@dataclass(frozen=True)
class GluePreset:
    """One GLUE task: where its data is, how it is read, and the metric GLUE reports for it."""

    config: str  # the dataset config of nyu-mll/glue
    text_column: str
    text_pair_column: str | None
    task: str  # classification or regression
    metric: str  # the selection metric (GLUE's main one)
    reported: tuple[str, ...]  # what GLUE reports for the task


GLUE_TASKS: dict[str, GluePreset] = {
    "cola": GluePreset("cola", "sentence", None, "classification", "mcc", ("mcc",)),
    "sst2": GluePreset("sst2", "sentence", None, "classification", "accuracy", ("accuracy",)),
    "mrpc": GluePreset("mrpc", "sentence1", "sentence2", "classification", "f1", ("f1", "accuracy")),
    "qqp": GluePreset("qqp", "question1", "question2", "classification", "f1", ("f1", "accuracy")),
    "stsb": GluePreset("stsb", "sentence1", "sentence2", "regression", "pearson", ("pearson", "spearman")),
    # validation: validation_matched (the split the LoRA paper reports)
    "mnli": GluePreset("mnli", "premise", "hypothesis", "classification", "accuracy", ("accuracy",)),
    "qnli": GluePreset("qnli", "question", "sentence", "classification", "accuracy", ("accuracy",)),
    "rte": GluePreset("rte", "sentence1", "sentence2", "classification", "accuracy", ("accuracy",)),
    "wnli": GluePreset("wnli", "sentence1", "sentence2", "classification", "accuracy", ("accuracy",)),
}

#: Labelled examples per split (train, validation; validation_matched for MNLI) of nyu-mll/glue, for
#: the dry-run cost of a study (the test splits are unlabeled: never scored).
GLUE_SIZES: dict[str, tuple[int, int]] = {
    "cola": (8_551, 1_043),
    "sst2": (67_349, 872),
    "mrpc": (3_668, 408),
    "qqp": (363_846, 40_430),
    "stsb": (5_749, 1_500),
    "mnli": (392_702, 9_815),
    "qnli": (104_743, 5_463),
    "rte": (2_490, 277),
    "wnli": (635, 71),
}


def glue_preset(name: str) -> GluePreset:
    key = str(name).strip().lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ConfigError(f"--glue must be one of {', '.join(GLUE_TASKS)}, got {name!r}")
    return GLUE_TASKS[key]


def preset_values(name: str) -> dict[str, object]:
    """The flat options ``--glue NAME`` sets (each only where the run leaves it at its default)."""
    p = glue_preset(name)
    return {
        "dataset": GLUE_DATASET,
        "dataset_config": p.config,
        "text_column": p.text_column,
        "text_pair_column": p.text_pair_column,
        "label_column": "label",
        "task": p.task,
        "metric": p.metric,
    }


def check_metric(metric: str | None, task: str | None) -> None:
    """``--metric`` must name a metric of the run's task."""
    if metric is None:
        return
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(f"--metric must be one of {', '.join(METRIC_DIRECTIONS)}, got {metric!r}")
    kind = task or "classification"
    allowed = REGRESSION_METRICS if kind == "regression" else CLASSIFICATION_METRICS
    if metric not in allowed:
        raise ConfigError(f"--metric {metric} does not apply to {kind} (use one of {', '.join(allowed)})")


def selection_metric(metric: str | None, task: str | None) -> str:
    """The metric a run selects its best epoch on: ``--metric``, else the task's default."""
    return metric or DEFAULT_METRIC.get(task or "classification", "accuracy")

"""One trial of a search: sample the space, train an ordinary run directory with
:func:`loralab.training.run.train`, report each epoch's validation metric to the pruner, and return the
validation metric. The test split is left out of every trial (``test_split=False``).

Only the pruner prunes: a trial that ``--patience`` stopped early has finished, with the value of
its restored best epoch, and is complete (it counts for the best trial and for the sampler's
history). A pruned trial's run directory holds the weights of the epoch it was pruned after
(``results.json["weights_epoch"]``), which need not be its ``best_epoch``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loralab.evaluation.metrics import metric_value
from loralab.experiments.search import EPOCH_METRIC_COLUMN, TuneSpec

TRIALS_DIR = "trials"


def trial_dir(out_dir: Path, number: int) -> Path:
    return Path(out_dir) / TRIALS_DIR / f"trial-{number:04d}"


@dataclass
class TrialOutcome:
    """What one trial gave: its value (validation metric), whether the pruner stopped it, its run,
    and why training ended early when it did (the pruner, or early stopping: then not pruned)."""

    value: float
    pruned: bool
    run_dir: Path
    epochs: int
    seconds: float
    stopped: str | None = None


def sample(spec: TuneSpec, trial) -> dict[str, Any]:
    """The trial's values for every parameter of the space (recorded in the storage by Optuna)."""
    return {p.name: p.suggest(trial) for p in spec.params}


def run_trial(spec: TuneSpec, trial, out_dir: Path) -> TrialOutcome:
    """Train the trial's run directory; prune after an epoch when the pruner says so."""

    def report(value: float, epoch: int) -> bool:
        trial.report(value, step=epoch)
        return trial.should_prune()

    return train_trial(spec, sample(spec, trial), trial.number, trial_dir(out_dir, trial.number), report)


def train_trial(
    spec: TuneSpec, params: dict[str, Any], number: int, run_dir: Path, report: Callable[[float, int], bool]
) -> TrialOutcome:
    """Train one trial with sampled ``params`` into ``run_dir``. After each epoch but the last,
    ``report(value, epoch)`` gives the pruner the validation metric and says whether to stop: the
    same code whether the pruner is in this process or reached through Ray (:mod:`.ray_executor`)."""
    from loralab.study.plan import train_flags
    from loralab.training.run import StopRun, train
    from loralab.training.tracking import run_tags

    config = spec.trial_config(params).override({"output_dir": str(run_dir), "progress": False})
    column = EPOCH_METRIC_COLUMN  # the trial's selection metric: the objective (TuneSpec.trial_config)
    pruner_name, _ = spec.pruner_options()
    pruned_after: list[int] = []  # the epoch this trial's pruner stopped it after

    def on_epoch(row: dict) -> None:
        if pruner_name == "none" or row.get(column) is None:
            return
        epoch, value = int(row["epoch"]), float(row[column])
        if report(value, epoch) and epoch < config.train.epochs:  # the last epoch: nothing to save
            pruned_after.append(epoch)
            raise StopRun(
                f"pruned by the {pruner_name} pruner after epoch {epoch} ({column} {value:.4f}, trial {number})"
            )

    with run_tags(search=spec.name, trial=number):  # trackers group the trials under their search
        result = train(config, command=["loralab", "train", *train_flags(config)], on_epoch=on_epoch, test_split=False)
    r = result.results
    value = metric_value(r["validation"], spec.metric)
    stopped = (r.get("stopped") or {}).get("reason")
    return TrialOutcome(
        value, bool(pruned_after), result.run_dir, int(r["epochs"]), float(r["timing"]["total_seconds"]), stopped
    )

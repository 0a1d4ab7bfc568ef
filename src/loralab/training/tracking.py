"""Experiment tracking for ``--report-to tensorboard,mlflow,wandb``, through accelerate's tracker
classes (``accelerate.tracking``: ``TensorBoardTracker``, ``MLflowTracker``, ``WandBTracker``), on
the main process only. Each tracker gets the resolved config as hyper-parameters, the per-step train
loss and learning rate, the per-epoch validation metrics and the final metrics; MLflow also gets the
finished run directory as an artefact (``run/``).

Where each one writes:

- **tensorboard**: ``<run>/tensorboard/`` (the hyper-parameters with the final metrics in
  ``<run>/tensorboard/hparams/``).
- **wandb**: ``<run>/wandb/`` (``wandb.init(dir=<run>)``). With ``WANDB_MODE=offline`` the whole W&B
  run stays there (``wandb sync <run>/wandb/offline-run-*`` uploads it later); online it is also sent
  to the W&B server.
- **mlflow**: its tracking store, ``MLFLOW_TRACKING_URI``; when that is not set, MLflow's default
  store in the *current folder* (``./mlflow.db``, artefacts under ``./mlruns``), which one INFO line
  says at the start of the run.

Everything a tracker writes into the run directory is written into its staging folder and closed
before that folder is renamed into place (:func:`loralab.files.atomic_dir`), so a finished run
leaves no hidden staging folder behind and a study's "staging folder(s) left by killed runs" are
only ever those of killed runs.

Naming rule, the same for runs, studies and searches: the MLflow experiment (the W&B project) is
``MLFLOW_EXPERIMENT_NAME`` (``WANDB_PROJECT``) if set, else the study's name for a study run, else
the search's name for a search trial, else ``loralab``. Runs are tagged ``loralab.run`` (the run
directory's name); study runs ``study``, ``cell`` and ``seed`` (the study executors set
``LORALAB_STUDY``, ``LORALAB_CELL`` and ``LORALAB_SEED``); search trials ``search`` and ``trial``
(set by :mod:`loralab.tune.objective` through :func:`run_tags`). W&B groups a run by its study or
search and takes the tags as ``key=value``; TensorBoard records them as text.

MLflow run status: ``FINISHED`` when the run directory is written; ``KILLED`` when an ``on_epoch``
callback stopped training (a pruned search trial: its run directory is still written); ``FAILED``
when training raised or was interrupted (an error, Ctrl-C, SIGTERM). A process killed outright
(SIGKILL) cannot say anything: its run stays ``RUNNING`` until ``--resume`` continues it. W&B: a
failed run finishes with exit code 1, a stopped one is tagged ``stopped``.

Resuming: the MLflow run id is kept beside the run's checkpoints (``.<run>.checkpoint/tracking.json``);
``--resume`` continues that MLflow run (``mlflow.start_run(run_id=...)``), adding only the parameters
it lacks and sending no metric again at a step it already has. TensorBoard and W&B start afresh in
the new run directory with the whole history (the killed attempt's staging folder is gone).

All three are optional extras (``pip install 'loralab[track]'``); a missing one is a one-line error
before training.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loralab.errors import ConfigError
from loralab.files import atomic_write_json

log = logging.getLogger(__name__)

REPORT_TO = ("tensorboard", "mlflow", "wandb")
EXTRA_HINT = "pip install 'loralab[track]'"
#: Environment variables a study executor sets for its runs (turned into tags).
STUDY_TAGS = {"LORALAB_STUDY": "study", "LORALAB_CELL": "cell", "LORALAB_SEED": "seed"}
DEFAULT_EXPERIMENT = "loralab"
#: The tracker state a resumed run reads back, written beside the run's checkpoints.
STATE_FILE = "tracking.json"

_RUN_TAGS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("loralab_run_tags", default=None)


def check_report_to(names: list[str] | None) -> list[str]:
    """The tracker names, validated, with a one-line error if a library is missing."""
    names = [n for n in (names or []) if n and n != "none"]
    for name in names:
        if name not in REPORT_TO:
            raise ConfigError(f"--report-to: unknown tracker {name!r} (choose from {', '.join(REPORT_TO)})")
        try:
            __import__(name)  # the package is named like the tracker
        except ImportError:
            raise ConfigError(f"--report-to {name} needs the {name} package: {EXTRA_HINT}") from None
    return names


@contextlib.contextmanager
def run_tags(**tags: Any) -> Iterator[None]:
    """Tag the runs trained inside this block (a search trial: ``search=..., trial=...``)."""
    token = _RUN_TAGS.set({**(_RUN_TAGS.get() or {}), **{k: str(v) for k, v in tags.items()}})
    try:
        yield
    finally:
        _RUN_TAGS.reset(token)


def study_tags() -> dict[str, str]:
    """The tags of this run: its study's (from the environment) and those of :func:`run_tags`."""
    return {
        **{tag: os.environ[env] for env, tag in STUDY_TAGS.items() if os.environ.get(env)},
        **(_RUN_TAGS.get() or {}),
    }


def experiment_name(tags: dict[str, str], env: str = "MLFLOW_EXPERIMENT_NAME") -> str:
    """The naming rule: ``env`` if set, else the study, else the search, else ``loralab``."""
    return os.environ.get(env) or tags.get("study") or tags.get("search") or DEFAULT_EXPERIMENT


class Trackers:
    """The trackers of one run (main process only), writing into ``logdir`` (the staging folder).
    ``log_history`` sends the rows not sent yet; ``finish`` (before the staging folder is renamed)
    or ``abort`` ends every tracker. ``state_dir`` (the checkpoint folder) keeps the MLflow run id
    for ``resume``."""

    def __init__(
        self,
        names: list[str],
        run_name: str,
        logdir: Path,
        params: dict[str, Any],
        state_dir: Path | None = None,
        resume: bool = False,
    ) -> None:
        from accelerate import PartialState

        PartialState()  # accelerate's trackers log through its logger, which needs the state
        self.names, self.sent, self.params, self.logdir = names, 0, params, Path(logdir)
        self.status, self.stop_reason = "FINISHED", None
        self.tb = self.mlflow = self.wandb = None
        self.mlflow_done: dict[str, int] = {}  # metric -> last step the resumed MLflow run has
        self.tags = {"loralab.run": run_name, **study_tags()}
        try:
            if "tensorboard" in names:
                self._start_tensorboard()
            if "mlflow" in names:
                self._start_mlflow(run_name, state_dir, resume)
            if "wandb" in names:
                self._start_wandb(run_name)
        except BaseException:
            self.abort()
            raise

    # ---- starting -------------------------------------------------------------------------------
    def _start_tensorboard(self) -> None:
        from accelerate.tracking import TensorBoardTracker

        # TensorBoardTracker writes to <logging_dir>/<run_name>: <run>/tensorboard/
        self.tb = _started(TensorBoardTracker("tensorboard", self.logdir))
        text = {"config": "\n".join(f"    {k}: {v}" for k, v in sorted(self.params.items()))}
        self.tb.log({**text, **{f"tags/{k}": v for k, v in self.tags.items()}}, step=0)

    def _start_mlflow(self, run_name: str, state_dir: Path | None, resume: bool) -> None:
        import mlflow
        from accelerate.tracking import MLflowTracker

        if not _mlflow_uri_is_set(mlflow):
            log.info(
                "MLflow: MLFLOW_TRACKING_URI is not set, so this run goes to MLflow's default store in the "
                "current folder (%s, artefacts under %s); set MLFLOW_TRACKING_URI (file:, sqlite: or http(s): "
                "URI) to write elsewhere",
                mlflow.get_tracking_uri(),
                Path.cwd() / "mlruns",
            )
        uri, state_file = mlflow.get_tracking_uri(), (state_dir / STATE_FILE if state_dir is not None else None)
        run_id = _resumable_run(state_file, uri) if resume else None
        experiment = experiment_name(self.tags)
        for attempt in range(3):
            try:
                self.mlflow = _started(MLflowTracker(experiment_name=experiment, run_id=run_id, run_name=run_name))
                break
            except Exception as e:
                if run_id is not None:  # the killed attempt's run is gone (deleted, another store)
                    log.warning("MLflow: cannot continue run %s (%s); starting a new run", run_id, _line(e))
                    run_id = None
                elif attempt == 2 or "already exists" not in str(e):  # else: another worker created the experiment
                    raise ConfigError(f"--report-to mlflow: MLflow did not start at {uri}: {_line(e)}") from None
        # accelerate's `tags` argument would also tag the experiment it creates: the run alone is tagged
        mlflow.set_tags(self.tags)
        params = {k: _param(v) for k, v in self.params.items()}
        if run_id is not None:  # parameters are write-once in MLflow: add only those the run lacks
            client = mlflow.MlflowClient()
            run = client.get_run(run_id)
            params = {k: v for k, v in params.items() if k not in run.data.params}
            for key in run.data.metrics:  # no metric is sent again at a step the run already has
                self.mlflow_done[key] = max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
            log.info("MLflow: continuing run %s of experiment %s", run_id, experiment)
        self.mlflow.store_init_configuration(params)
        if state_file is not None:
            atomic_write_json(state_file, {"mlflow": {"run_id": self.mlflow.tracker.info.run_id, "tracking_uri": uri}})

    def _start_wandb(self, run_name: str) -> None:
        from accelerate.tracking import WandBTracker

        group = self.tags.get("study") or self.tags.get("search")
        try:
            # WandBTracker's first argument is the W&B project; the other keywords go to wandb.init
            self.wandb = _started(
                WandBTracker(
                    experiment_name(self.tags, "WANDB_PROJECT"),
                    name=run_name,
                    dir=str(self.logdir),  # the W&B folder (offline: the whole run) is <run>/wandb/
                    group=group,
                    tags=[f"{k}={v}"[:64] for k, v in self.tags.items()],
                )
            )
        except Exception as e:
            raise ConfigError(
                f"--report-to wandb: W&B did not start: {_line(e)} (or set WANDB_MODE=offline to keep the run "
                "in the run directory and `wandb sync` it later)"
            ) from None
        self.wandb.store_init_configuration(dict(self.params))

    # ---- feeding --------------------------------------------------------------------------------
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
            if not values:
                continue
            if self.tb is not None:
                self.tb.log(values, step=step)
            if self.wandb is not None:
                self.wandb.log(values, step=step)
            if self.mlflow is not None:
                metrics = {_mlflow_key(k): v for k, v in values.items()}
                metrics = {k: v for k, v in metrics.items() if step > self.mlflow_done.get(k, -1)}
                if metrics:
                    self.mlflow.log(metrics, step=step)
        self.sent = len(history)

    def stopped(self, reason: str) -> None:
        """Training was stopped from outside (``StopRun``: a pruned trial): MLflow status KILLED."""
        self.status, self.stop_reason = "KILLED", reason

    # ---- ending ---------------------------------------------------------------------------------
    def finish(self, results: dict) -> None:
        """Final metrics; the run directory (still the staging folder ``logdir``) as an MLflow
        artefact; every tracker ended. Call it before the staging folder is renamed into place."""
        final = {
            f"final/{split}_{m}": float(results[split][m])
            for split in ("validation", "test")
            if results.get(split)
            for m in ("accuracy", "f1", "loss")
        }
        final["final/trainable_params"] = float(results["params"]["trainable"])
        if self.tb is not None:
            # accelerate's store_init_configuration writes hparams without metrics (and into a
            # time-stamped folder): the writer records them once, with the final metrics
            self.tb.writer.add_hparams({k: _param(v) for k, v in self.params.items()}, final, run_name="hparams")
            self.tb.finish()
            self.tb = None
        if self.wandb is not None:
            run = self.wandb.tracker  # the wandb Run: accelerate has no summary, tags or exit code
            run.summary.update(final)
            if self.stop_reason is not None:
                run.summary["stopped"] = self.stop_reason
                run.tags = (*run.tags, "stopped")
            self.wandb.finish()
            self.wandb = None
            _copy_links_out(self.logdir / "wandb", self.logdir)
        if self.mlflow is not None:
            import mlflow

            self.mlflow.log({_mlflow_key(k): v for k, v in final.items()})
            if self.stop_reason is not None:
                mlflow.set_tag("loralab.stopped", self.stop_reason)
            for entry in sorted(self.logdir.iterdir()):
                if entry.name == "wandb":  # W&B's own record of the run (with links): not MLflow's
                    continue
                if entry.is_dir():
                    self.mlflow.log_artifacts(str(entry), artifact_path=f"run/{entry.name}")
                else:
                    self.mlflow.log_artifact(str(entry), artifact_path="run")
            # accelerate's finish() always ends the run FINISHED: a pruned trial ends KILLED
            mlflow.end_run(status=self.status)
            self.mlflow = None

    def abort(self) -> None:
        """Training raised or was interrupted: end every tracker still open (MLflow: FAILED)."""
        if self.tb is not None:
            with contextlib.suppress(Exception):
                self.tb.finish()
            self.tb = None
        if self.wandb is not None:
            with contextlib.suppress(Exception):
                self.wandb.tracker.finish(exit_code=1)  # accelerate's finish() has no exit code
            self.wandb = None
        if self.mlflow is not None:
            import mlflow

            with contextlib.suppress(Exception):
                mlflow.end_run(status="FAILED")  # accelerate's finish() always ends the run FINISHED
            self.mlflow = None


def _started(tracker):
    """accelerate >= 1.2 starts a tracker lazily (``start()``); earlier ones in the constructor."""
    start = getattr(tracker, "start", None)
    if start is not None:
        start()
    return tracker


def _copy_links_out(folder: Path, root: Path) -> None:
    """Replace the links in ``folder`` that point out of ``root`` (W&B links its core debug log in
    ~/.cache) by a copy of their file: a run directory holds no link out of itself, which a copy, an
    export or a run landed from a Ray task (tar's ``data`` filter refuses such links) needs."""
    if not folder.is_dir():
        return
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = link.resolve()
            if target == root or root in target.parents:
                continue
            link.unlink()
            if target.is_file():
                shutil.copyfile(target, link)


def _mlflow_uri_is_set(mlflow) -> bool:
    """Whether MLflow was told where to write (the environment, or ``mlflow.set_tracking_uri``)."""
    is_set = getattr(mlflow, "is_tracking_uri_set", None)
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (is_set is not None and is_set())


def _resumable_run(state_file: Path | None, uri: str) -> str | None:
    """The MLflow run id a killed attempt of this run kept, if it used the same tracking store."""
    if state_file is None or not state_file.is_file():
        return None
    try:
        saved = json.loads(state_file.read_text(encoding="utf-8")).get("mlflow") or {}
    except (OSError, ValueError) as e:
        log.warning("MLflow: %s is unreadable (%s); starting a new run", state_file, e)
        return None
    if saved.get("run_id") and saved.get("tracking_uri") != uri:
        log.warning(
            "MLflow: the killed attempt's run %s is in %s, not %s; starting a new run",
            saved["run_id"],
            saved.get("tracking_uri"),
            uri,
        )
        return None
    return saved.get("run_id")


def _mlflow_key(key: str) -> str:
    return key.replace("/", "_")


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _param(value: Any) -> Any:
    """Hyper-parameter values as the trackers take them (numbers and strings)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)

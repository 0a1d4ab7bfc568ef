"""Run a search: a worker loop that asks Optuna for trials until the shared budget is spent, and
``--jobs N`` local workers as subprocesses of one command.

Budget: a search finishes when it has ``trials`` finished (complete or pruned) trials, counted
over every worker sharing the storage. A worker claims a trial with ``study.ask()`` (the storage
numbers trials atomically) and runs it only if fewer than ``trials`` live trials (running,
complete or pruned) are numbered below it; otherwise the claim is closed as a failed, "surplus"
trial that never ran (Optuna cannot delete a trial). So N workers finish exactly ``trials``
trials between them, with no trial run twice. Failed trials (an error, a killed worker) do not
count: the search runs another in their place.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loralab.errors import LoralabError
from loralab.experiments.launch import worker_env
from loralab.experiments.search import TuneSpec
from loralab.files import atomic_write_json, read_json
from loralab.tune import require_optuna
from loralab.tune.objective import TRIALS_DIR, TrialOutcome, run_trial, trial_dir
from loralab.tune.optuna_internals import storage_of, trial_id
from loralab.tune.storage import (
    ATTR_HOST,
    ATTR_PID,
    ATTR_RUN_DIR,
    ATTR_SURPLUS,
    Heartbeat,
    TuneError,
    default_url,
    fail_interrupted,
    host,
    open_storage,
    open_study,
    redact,
)

log = logging.getLogger(__name__)
TUNE_FILE = "tune.json"
LOGS_DIR = "logs"
STORAGE_ENV = "LORALAB_TUNE_STORAGE"
#: A worker stops after this many failed trials in a row (a space that cannot train).
MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class WorkerOutcome:
    """What one worker did."""

    finished: list[int] = field(default_factory=list)  # trial numbers completed or pruned here
    pruned: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)  # trials of dead workers failed at start
    seconds: float = 0.0


def make_sampler(spec: TuneSpec):
    optuna = require_optuna()
    kind, opts = spec.sampler_options()
    if kind == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=opts.get("seed"))
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=opts.get("seed"))
    # constant_liar: parallel workers see running trials as bad, so they do not all sample the same point
    return optuna.samplers.TPESampler(
        seed=opts.get("seed"), n_startup_trials=opts.get("n_startup_trials", 10), constant_liar=True
    )


def make_pruner(spec: TuneSpec):
    optuna = require_optuna()
    kind, opts = spec.pruner_options()
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=opts.get("n_startup_trials", 2), n_warmup_steps=opts.get("n_warmup_steps", 0)
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=opts.get("min_resource", 1), reduction_factor=opts.get("reduction_factor", 3)
        )
    return optuna.pruners.NopPruner()


def resolve_storage(out_dir: Path, storage: str | None) -> str:
    return storage or os.environ.get(STORAGE_ENV) or default_url(out_dir)


def live_trials(study) -> list:
    """Trials that count against the budget: running, complete or pruned (not surplus)."""
    TrialState = require_optuna().trial.TrialState
    states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(ATTR_SURPLUS)]


def write_tune_file(spec: TuneSpec, out_dir: Path, url: str, budget: int) -> None:
    path = out_dir / TUNE_FILE
    data = {
        "schema_version": 1,
        "name": spec.name,
        "source": spec.source,
        "spec": spec.to_dict(),
        "storage": redact(url),
        "trials": budget,
    }
    if not path.is_file() or read_json(path) != data:
        atomic_write_json(path, data)


def start_search(spec: TuneSpec, out_dir: str | Path, storage: str | None, trials: int | None):
    """What every worker starts from: ``(out_dir, url, study, budget)``, the search folder made,
    the study created or checked, and ``tune.json`` written. The budget is ``trials`` (default: the
    spec's), for grid at most the grid's size."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = trials or spec.trials
    if spec.sampler_options()[0] == "grid":
        budget = min(budget, spec.grid_size())
    url = resolve_storage(out_dir, storage)
    study = open_study(spec, open_storage(url))
    write_tune_file(spec, out_dir, url, budget)
    return out_dir, url, study, budget


def run_worker(
    spec: TuneSpec,
    out_dir: str | Path,
    storage: str | None = None,
    trials: int | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> WorkerOutcome:
    """Run trials of ``spec`` until the search has ``trials`` finished ones (default: the spec's
    budget; for grid, at most the grid's size). Safe to run on many machines at once against one
    storage, and to re-run after a crash."""
    TrialState = require_optuna().trial.TrialState
    out_dir, url, study, budget = start_search(spec, out_dir, storage, trials)
    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    outcome = recover(study, out_dir, echo)
    echo(
        f"search {spec.name}: {len(live_trials(study))} of {budget} trials done or running "
        f"-> {out_dir} (storage {redact(url)})"
    )
    failures_in_row = 0
    while not grid_done(study):
        if newly := fail_interrupted(study):  # a worker died meanwhile: its trial no longer counts
            outcome.interrupted += newly
            echo(f"failed {len(newly)} trial(s) of killed workers: {newly}")
            sweep_staging(out_dir, study)
        if len(live_trials(study)) >= budget:
            break
        trial = claim_trial(study, out_dir, budget)
        if trial is None:
            break
        try:
            with Heartbeat(storage_of(study), trial_id(trial)):
                result = run_trial(spec, trial, out_dir)
        except (KeyboardInterrupt, SystemExit):
            tell(study, trial, state=TrialState.FAIL)
            raise
        except LoralabError as e:
            failures_in_row = fail_trial(study, trial, outcome, str(e), failures_in_row, spec, echo)
            continue
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            tell(study, trial, state=TrialState.FAIL)
            raise
        failures_in_row = 0
        finish_trial(study, trial, outcome, result, spec, budget, echo)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def recover(study, out_dir: Path, echo: Callable[[str], None]) -> WorkerOutcome:
    """A worker's start: fail the trials of killed workers (they never count) and remove their
    staging folders; the returned outcome records them."""
    outcome = WorkerOutcome(interrupted=fail_interrupted(study))
    if outcome.interrupted:
        echo(f"failed {len(outcome.interrupted)} trial(s) of killed workers: {outcome.interrupted}")
    sweep_staging(out_dir, study)
    return outcome


def grid_done(study) -> bool:
    """Whether a grid search has asked for every point of its grid (never, for other samplers)."""
    sampler = study.sampler
    return isinstance(sampler, require_optuna().samplers.GridSampler) and sampler.is_exhausted(study)


def claim_trial(study, out_dir: Path, budget: int):
    """Ask the storage for a trial and claim it for this worker, or None (closing the claim as a
    failed "surplus" trial) when ``budget`` live trials are already numbered below it."""
    trial = study.ask()
    trial.set_user_attr(ATTR_HOST, host())
    trial.set_user_attr(ATTR_PID, os.getpid())
    if len([t for t in live_trials(study) if t.number < trial.number]) >= budget:
        trial.set_user_attr(ATTR_SURPLUS, True)  # another worker claimed the last trial first
        tell(study, trial, state=require_optuna().trial.TrialState.FAIL)
        return None
    trial.set_user_attr(ATTR_RUN_DIR, str(trial_dir(out_dir, trial.number)))
    return trial


def fail_trial(
    study, trial, outcome: WorkerOutcome, error: str, failures_in_row: int, spec: TuneSpec, echo: Callable[[str], None]
) -> int:
    """Record a trial that failed with a one-line ``error``; returns the failures in a row, and
    stops the worker (:class:`TuneError`) at :data:`MAX_CONSECUTIVE_FAILURES`."""
    trial.set_user_attr("error", error)
    tell(study, trial, state=require_optuna().trial.TrialState.FAIL)
    outcome.failed.append(trial.number)
    echo(f"trial {trial.number} FAILED: {error}")
    failures_in_row += 1
    if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
        raise TuneError(f"{spec.source}: {failures_in_row} trials failed in a row; last: {error}")
    return failures_in_row


def finish_trial(
    study,
    trial,
    outcome: WorkerOutcome,
    result: TrialOutcome,
    spec: TuneSpec,
    budget: int,
    echo: Callable[[str], None],
    where: str = "",
) -> None:
    """Tell the storage how a trial that ran ended (complete with its value, or pruned) and say so.
    Only the pruner prunes: a trial that early stopping (``patience``) ended is complete."""
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("seconds", round(result.seconds, 1))
    if result.stopped:
        trial.set_user_attr("stopped", result.stopped)
    if result.pruned:
        tell(study, trial, state=require_optuna().trial.TrialState.PRUNED)
        outcome.pruned.append(trial.number)
    else:
        tell(study, trial, result.value)
    outcome.finished.append(trial.number)
    how = "pruned" if result.pruned else "done (stopped early)" if result.stopped else "done"
    echo(
        f"trial {trial.number} {how}{where}: {spec.metric} {result.value:.4f} "
        f"after {result.epochs} epoch(s), {result.seconds:.0f}s, {trial.params} | "
        f"{len(live_trials(study))}/{budget}"
    )


def tell(study, trial, value: float | None = None, state=None) -> None:
    """``study.tell``; Optuna's GridSampler asks an ``optimize`` loop to stop once the grid is
    done (a RuntimeError outside one, after the trial is stored); this loop checks that itself."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def sweep_staging(out_dir: Path, study) -> int:
    """Remove hidden staging folders of trials that are no longer running (killed attempts)."""
    import shutil

    TrialState = require_optuna().trial.TrialState
    trials_dir = out_dir / TRIALS_DIR
    if not trials_dir.is_dir():
        return 0
    running = {f"trial-{t.number:04d}" for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    removed = 0
    for p in trials_dir.iterdir():
        if p.name.startswith(".trial-") and p.name.split(".")[1] not in running:
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed


def run_jobs(
    spec_path: str,
    out_dir: Path,
    url: str,
    jobs: int,
    trials: int | None,
    threads: int | None,
    echo: Callable[[str], None] = print,
) -> int:
    """``--jobs N``: N worker processes on this machine sharing the storage; returns the worst exit code."""
    from loralab.study.runner import default_threads

    threads = threads or default_threads(jobs)
    (out_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    env = worker_env(threads, {STORAGE_ENV: url})  # the URL (maybe with a password) goes by environment, not argv
    cmd = [sys.executable, "-m", "loralab", "tune", spec_path, "--out", str(out_dir), "--threads", str(threads)]
    if trials:
        cmd += ["--trials", str(trials)]
    procs = []
    for i in range(jobs):
        log_path = out_dir / LOGS_DIR / f"worker-{i}.log"
        with open(log_path, "ab") as f:
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env))
        echo(f"worker {i}: pid {procs[-1].pid}, log {log_path}")
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return max(codes, key=abs)


def require_budget_file(out_dir: Path) -> dict:
    path = Path(out_dir) / TUNE_FILE
    if not path.is_file():
        raise TuneError(f"{out_dir}: not a search folder (no {TUNE_FILE}; run `loralab tune SEARCH.yaml` first)")
    return read_json(path)

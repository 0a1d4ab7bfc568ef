"""``loralab tune SEARCH.yaml --executor ray``: the search's trials as Ray tasks, so Ray spreads a
search over every machine of a cluster.

The driver (the machine that ran ``loralab tune``) owns the Optuna study: it asks for each trial,
submits it as a Ray task with its resources, and tells the result, so the budget, the sampler and
the storage behave as for a local worker (:mod:`.runner`; the storage may be the default SQLite
file, which only the driver's node touches). Pruning decisions stay there too: after each epoch a
task reports its validation value to a small Ray actor pinned to the driver's node, which records
it in the storage and answers "prune or go on" from the search's pruner.

As for studies (the loop and the landing are :mod:`loralab.experiments.ray`'s), no shared filesystem is
needed: a task trains into a temporary folder on its node and returns the run directory as a tar
archive, which the driver lands atomically in ``trials/trial-NNNN``. Killing the driver ends its
tasks; re-running the command fails the trials that were in flight (they no longer count) and
continues the search.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loralab.errors import LoralabError
from loralab.experiments.ray import (
    MAX_RETRIES,
    LandingError,
    import_ray,
    land_archive,
    largest_node,
    pack_dir,
    ray_session,
    run_tasks,
    task_gpus,
)
from loralab.experiments.search import TuneSpec
from loralab.tune import require_optuna
from loralab.tune.objective import TrialOutcome, sample, train_trial, trial_dir
from loralab.tune.optuna_internals import storage_of, trial_id
from loralab.tune.runner import (
    WorkerOutcome,
    claim_trial,
    fail_trial,
    finish_trial,
    grid_done,
    live_trials,
    recover,
    start_search,
    tell,
)
from loralab.tune.storage import Heartbeat, open_storage, redact


class PruningReporter:
    """The Ray actor that answers a task's per-epoch report from the search's pruner."""

    def __init__(self, spec: TuneSpec, url: str) -> None:
        optuna = require_optuna()
        from loralab.tune.runner import make_pruner

        self.storage = open_storage(url)
        self.study = optuna.load_study(
            study_name=spec.name,
            storage=self.storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=make_pruner(spec),
        )

    def report(self, trial_id: int, value: float, epoch: int) -> bool:
        """Record ``value`` at ``epoch`` and ask the pruner (what ``Trial.report`` and
        ``Trial.should_prune`` do, through the storage's public methods)."""
        self.storage.set_trial_intermediate_value(trial_id, epoch, float(value))
        return self.study.pruner.prune(self.study, self.storage.get_trial(trial_id))


def run_search_on_ray(
    spec: TuneSpec,
    out_dir: str | Path,
    storage: str | None = None,
    trials: int | None = None,
    threads: int | None = None,
    jobs: int | None = None,
    address: str | None = None,
    gpus_per_trial: int | None = None,
    echo: Callable[[str], None] = print,
) -> WorkerOutcome:
    """Run the search's remaining trials as Ray tasks, at most ``jobs`` at once (default: as many
    as the cluster's CPUs hold at ``threads`` each)."""
    import_ray()
    out_dir, url, study, budget = start_search(spec, out_dir, storage, trials)
    with ray_session(address) as ray:
        return _search(ray, spec, study, out_dir, url, budget, threads or 1, jobs, gpus_per_trial, echo)


def _search(
    ray,
    spec: TuneSpec,
    study,
    out_dir: Path,
    url: str,
    budget: int,
    threads: int,
    jobs: int | None,
    gpus_per_trial: int | None,
    echo: Callable[[str], None],
) -> WorkerOutcome:
    TrialState = require_optuna().trial.TrialState
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    t0 = time.perf_counter()
    resources = ray.cluster_resources()
    gpus = task_gpus(largest_node(ray), threads, gpus_per_trial)
    jobs = jobs or max(1, int(resources.get("CPU", 0) // threads))
    outcome = recover(study, out_dir, echo)
    here = ray.get_runtime_context().get_node_id()
    reporter = (
        ray.remote(PruningReporter)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        .remote(spec, url)
    )
    task = ray.remote(trial_in_task).options(num_cpus=threads, num_gpus=gpus, max_retries=MAX_RETRIES)
    echo(
        f"search {spec.name}: {len(live_trials(study))} of {budget} trials done or running -> {out_dir} "
        f"(storage {redact(url)}; Ray cluster of {int(resources.get('CPU', 0))} CPUs, "
        f"{int(resources.get('GPU', 0))} GPUs; up to {jobs} trials at once)"
    )
    failures_in_row = 0

    def submit():
        if len(live_trials(study)) >= budget or grid_done(study):
            return None
        trial = claim_trial(study, out_dir, budget)
        if trial is None:
            return None
        beat = Heartbeat(storage_of(study), trial_id(trial)).__enter__()
        return task.remote(spec, sample(spec, trial), trial.number, trial_id(trial), reporter, threads), (trial, beat)

    def done(context, result: dict, running: int) -> None:
        nonlocal failures_in_row
        trial, beat = context
        beat.__exit__(None, None, None)
        if "error" in result:
            failures_in_row = fail_trial(study, trial, outcome, result["error"], failures_in_row, spec, echo)
            return
        run_dir = trial_dir(out_dir, trial.number)
        try:
            land_archive(run_dir, result["archive"])
        except LandingError as e:  # the trial failed here, not on its node: recorded, never left RUNNING
            failures_in_row = fail_trial(study, trial, outcome, str(e), failures_in_row, spec, echo)
            return
        failures_in_row = 0
        trial.set_user_attr("node", result["node"])
        outcome_of_trial = TrialOutcome(run_dir=run_dir, **result["outcome"])
        finish_trial(study, trial, outcome, outcome_of_trial, spec, budget, echo, where=f" on {result['node']}")

    def abort(context) -> None:  # the trials in flight never finished: they do not count
        trial, beat = context
        beat.__exit__(None, None, None)
        tell(study, trial, state=TrialState.FAIL)

    run_tasks(ray, submit, done, max_in_flight=jobs, on_abort=abort)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def trial_in_task(spec: TuneSpec, params: dict[str, Any], number: int, trial_id: int, reporter, threads: int) -> dict:
    """Body of the Ray task (runs on a worker node): train the trial in a temporary folder, asking
    ``reporter`` after each epoch whether to prune; return its outcome and the run directory as a
    tar archive (or the one-line error)."""
    import socket

    import ray
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="loralab-ray-trial-") as tmp:
        run_dir = trial_dir(Path(tmp), number)
        try:
            result = train_trial(
                spec,
                params,
                number,
                run_dir,
                lambda value, epoch: ray.get(reporter.report.remote(trial_id, value, epoch)),
            )
        except LoralabError as e:
            return {"error": str(e)}
        outcome = {"value": result.value, "pruned": result.pruned, "epochs": result.epochs, "seconds": result.seconds}
        return {"outcome": outcome, "archive": pack_dir(result.run_dir), "node": socket.gethostname()}

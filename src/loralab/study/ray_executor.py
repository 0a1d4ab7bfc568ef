"""The Ray executor of ``loralab study run --executor ray``: every unfinished (cell, seed) becomes a
Ray task with its resources, so Ray spreads a study over every machine of a cluster (the loop and
the landing are :mod:`loralab.experiments.ray`'s, shared with searches).

Same semantics as the local executor (:mod:`loralab.study.runner`): finished runs are skipped, a
failed run is recorded in ``failures.json`` and the others go on, and the progress line is the same.

**No shared filesystem is needed for results.** A task trains in a temporary folder on whichever
node Ray picked (a fresh ``loralab train`` process, as locally, that dies with the task), packs the
finished run directory into a tar archive and returns it through Ray's object store; the driver (the
machine that ran ``study run``) unpacks it into a hidden staging folder of the study and renames it
into place. A run therefore lands complete or not at all; killing the driver ends its tasks (Ray
cancels the tasks of a dead driver) and re-running the study finishes it, skipping the runs that
landed. What the nodes do need: the same Python environment (loralab installed) and the data at
the same path (a shared or copied data folder), or data from the hub. Runs on Ray start from
scratch when re-run: their checkpoints stay in the task's temporary folder.
"""

from __future__ import annotations

import functools
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loralab.experiments.folder import STUDY_LOCK, StudyError, StudyFolder, file_lock
from loralab.experiments.launch import parent_death_signal, train_launcher, worker_env
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
from loralab.study.plan import PlannedRun, StudyPlan
from loralab.study.runner import Progress, StudyOutcome, clock, prepare, record_failure, study_env


def run_study_on_ray(
    plan: StudyPlan,
    address: str | None = None,
    threads: int | None = None,
    gpus_per_run: int | None = None,
    echo: Callable[[str], None] = print,
) -> StudyOutcome:
    """Run every unfinished run of ``plan`` as a Ray task (``num_cpus=threads``, ``num_gpus=G``)."""
    import_ray()
    folder = StudyFolder(plan.root)
    folder.root.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(folder.root / STUDY_LOCK, blocking=False), ray_session(address) as ray:
            return _run(ray, plan, folder, threads or 1, gpus_per_run, echo)
    except BlockingIOError:
        raise StudyError(f"{folder.root}: another `loralab study run` is using this study folder") from None


def _run(
    ray, plan: StudyPlan, folder: StudyFolder, threads: int, gpus_per_run: int | None, echo: Callable[[str], None]
) -> StudyOutcome:
    t0 = time.perf_counter()
    resources = ray.cluster_resources()
    gpus = task_gpus(largest_node(ray), threads, gpus_per_run)
    outcome = StudyOutcome()
    how = (
        f"Ray cluster ({int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs), "
        f"{threads} CPU(s){f' + {gpus} GPU(s)' if gpus else ''} per run"
    )
    todo, failures = prepare(plan, folder, outcome, echo, how)
    progress = Progress(plan, outcome, echo)
    task = ray.remote(train_in_task).options(num_cpus=threads, num_gpus=gpus, max_retries=MAX_RETRIES)
    queue = list(todo)

    def submit():
        if not queue:
            return None
        run = queue.pop(0)
        ref = task.remote(
            run.id, strip_output_dir(run.train_flags()), threads, max(1, gpus), study_env(plan.spec.name, run)
        )
        if not queue:
            progress(f"submitted {len(todo)} run(s)", len(todo), len(todo))
        return ref, (run, time.perf_counter())

    def done(context, result: dict, running: int) -> None:
        run, started = context
        secs = time.perf_counter() - started
        if "error" in result:
            result = {"returncode": -1, "log": result["error"] + "\n", "archive": None}
        _append_log(folder, run, result)
        rc = result["returncode"]
        if rc == 0 and result["archive"] is not None:
            try:
                land_archive(folder.run_dir(run.id), result["archive"])
            except LandingError as e:
                rc, result = -1, {**result, "log": f"{e}\n"}
            else:
                outcome.trained.append(run.id)
                failures.pop(run.id, None)
                folder.write_failures(failures)
                progress(f"done  {run.id} in {clock(secs)} on {result.get('node', '?')}", running, running)
                return
        lines = [ln.strip() for ln in result["log"].splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit code {rc}, no output"
        record_failure(failures, outcome, folder, run, rc, error, secs)
        progress(f"FAIL  {run.id} in {clock(secs)}: {error}", running, running)

    run_tasks(ray, submit, done)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def strip_output_dir(flags: list[str]) -> list[str]:
    """The run's ``loralab train`` flags without ``--output-dir`` (the task chooses its own folder)."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == "--output-dir":
            skip = True
        elif not flag.startswith("--output-dir="):
            out.append(flag)
    return out


def train_in_task(run_id: str, flags: list[str], threads: int, processes: int, extra_env: dict | None = None) -> dict:
    """Body of the Ray task (runs on a worker node): train into a temporary folder with a fresh
    ``loralab train`` process, return its exit code, its output and the run directory as a tar archive."""
    import socket
    import subprocess

    with tempfile.TemporaryDirectory(prefix="loralab-ray-") as tmp:
        out = Path(tmp) / run_id
        env = worker_env(threads, extra_env)
        cmd = [*train_launcher(processes), "train", *flags, "--output-dir", str(out), "--no-progress"]
        # the training process dies with the Ray worker running this task: a cancelled task leaves no orphan
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=functools.partial(parent_death_signal, signal.SIGKILL),
        )  # noqa: PLW1509
        archive = pack_dir(out) if proc.returncode == 0 and (out / "results.json").is_file() else None
        return {
            "returncode": proc.returncode,
            "log": proc.stdout.decode("utf-8", "replace"),
            "archive": archive,
            "node": socket.gethostname(),
        }


def _append_log(folder: StudyFolder, run: PlannedRun, result: dict) -> None:
    with open(folder.log_path(run.id), "a", encoding="utf-8") as f:
        f.write(f"=== ray task on {result.get('node', '?')}: {' '.join(run.command())}\n{result['log']}")

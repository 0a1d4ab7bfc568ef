"""The Ray executor of ``loralab study run --executor ray``: every unfinished (cell, seed) becomes a
Ray task with its resources, so Ray spreads a study over every machine of a cluster.

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
import io
import os
import signal
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..artifacts import atomic_dir
from .folder import STUDY_LOCK, StudyError, StudyFolder, file_lock
from .plan import PlannedRun, StudyPlan
from .runner import Progress, StudyOutcome, clock, prepare, record_failure, study_env
from .worker import parent_death_signal, train_launcher

EXTRA_HINT = "pip install 'loralab[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise StudyError(f"--executor ray needs Ray: {EXTRA_HINT}") from None
    return ray


def run_study_on_ray(
    plan: StudyPlan,
    address: str | None = None,
    threads: int | None = None,
    gpus_per_run: int | None = None,
    echo: Callable[[str], None] = print,
) -> StudyOutcome:
    """Run every unfinished run of ``plan`` as a Ray task (``num_cpus=threads``, ``num_gpus=G``)."""
    ray = import_ray()
    folder = StudyFolder(plan.root)
    folder.root.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(folder.root / STUDY_LOCK, blocking=False):
            started = not ray.is_initialized()
            if started:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                return _run(ray, plan, folder, threads or 1, gpus_per_run, echo)
            finally:
                if started:
                    ray.shutdown()
    except BlockingIOError:
        raise StudyError(f"{folder.root}: another `loralab study run` is using this study folder") from None


def task_gpus(resources: dict, threads: int, gpus_per_run: int | None) -> int:
    """GPUs per task (default: 1 where the cluster has GPUs), after checking that the cluster has
    them and ``threads`` CPUs."""
    gpus = gpus_per_run if gpus_per_run is not None else (1 if resources.get("GPU", 0) > 0 else 0)
    if gpus > resources.get("GPU", 0):
        raise StudyError(f"--gpus-per-run {gpus}: the Ray cluster has {int(resources.get('GPU', 0))} GPU(s)")
    if threads > resources.get("CPU", 0):
        raise StudyError(
            f"--threads {threads}: no node of the Ray cluster has that many CPUs "
            f"({int(resources.get('CPU', 0))} in all)"
        )
    return gpus


def _run(
    ray, plan: StudyPlan, folder: StudyFolder, threads: int, gpus_per_run: int | None, echo: Callable[[str], None]
) -> StudyOutcome:
    t0 = time.perf_counter()
    resources = ray.cluster_resources()
    gpus = task_gpus(resources, threads, gpus_per_run)
    outcome = StudyOutcome()
    how = (
        f"Ray cluster ({int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs), "
        f"{threads} CPU(s){f' + {gpus} GPU(s)' if gpus else ''} per run"
    )
    todo, failures = prepare(plan, folder, outcome, echo, how)
    progress = Progress(plan, outcome, echo)
    task = ray.remote(train_in_task).options(num_cpus=threads, num_gpus=gpus, max_retries=0)
    pending: dict = {}
    for run in todo:
        ref = task.remote(
            run.id, strip_output_dir(run.train_flags()), threads, max(1, gpus), study_env(plan.spec.name, run)
        )
        pending[ref] = (run, time.perf_counter())
    progress(f"submitted {len(todo)} run(s)", len(pending), len(pending))
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        run, started = pending.pop(ref)
        secs = time.perf_counter() - started
        try:
            result = ray.get(ref)
        except Exception as e:  # a task that died (node lost, out of memory) is one failed run
            result = {"returncode": -1, "log": f"ray task failed: {type(e).__name__}: {e}\n", "archive": None}
        _append_log(folder, run, result)
        if result["returncode"] == 0 and result["archive"] is not None:
            land(folder, run.id, result["archive"])
            outcome.trained.append(run.id)
            failures.pop(run.id, None)
            folder.write_failures(failures)
            progress(f"done  {run.id} in {clock(secs)} on {result.get('node', '?')}", len(pending), len(pending))
        else:
            lines = [ln.strip() for ln in result["log"].splitlines() if ln.strip()]
            error = lines[-1] if lines else f"exit code {result['returncode']}, no output"
            record_failure(failures, outcome, folder, run, result["returncode"], error, secs)
            progress(f"FAIL  {run.id} in {clock(secs)}: {error}", len(pending), len(pending))
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
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
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


def pack_dir(path: Path) -> bytes:
    """A finished run directory's contents as a tar archive, to travel through Ray's object store."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=".")
    return buf.getvalue()


def land_archive(path: Path, archive: bytes) -> None:
    """Unpack a run directory archive into a hidden staging folder beside ``path``, then rename it
    into place (``artifacts.atomic_dir``: a folder already there, incomplete and not made by loralab,
    is replaced)."""
    with atomic_dir(path, overwrite=True) as staging, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(staging, filter="data")


def land(folder: StudyFolder, run_id: str, archive: bytes) -> None:
    """Land a finished run of the study in its folder (see :func:`land_archive`)."""
    land_archive(folder.run_dir(run_id), archive)


def _append_log(folder: StudyFolder, run: PlannedRun, result: dict) -> None:
    with open(folder.log_path(run.id), "a", encoding="utf-8") as f:
        f.write(f"=== ray task on {result.get('node', '?')}: {' '.join(run.command())}\n{result['log']}")

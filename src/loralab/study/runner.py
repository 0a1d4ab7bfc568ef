"""Execute a study plan: every unfinished run in a fresh subprocess, ``jobs`` at a time.

* **Fresh process per run** (:mod:`loralab.cli.worker`): peak memory is the run's own, and a
  crash (or an out-of-memory kill) takes down one run, not the study.
* **Resumable**: a run whose directory holds ``results.json`` is skipped. The core writes runs
  atomically, so after a crash or ``kill -9`` a re-run finds every run either complete or
  absent; stale staging folders are removed (see :mod:`loralab.experiments.folder`).
* **Failures are recorded** in ``failures.json`` (exit code and the last line of the run's log)
  and the other runs go on; a later ``study run`` retries them.
* **Threads**: each worker gets ``threads`` torch threads (default: cores // jobs, at least 1).
* **GPUs**: with ``gpus_per_run`` G (default 1 where torch sees a GPU), each worker gets G devices
  of its own through ``CUDA_VISIBLE_DEVICES``, taken from the visible ones and given back when it
  ends; at most ``visible // G`` runs go at once. A run with G > 1 is launched data-parallel on
  its G devices (``torchrun``, see :mod:`loralab.cli.worker`).

This is the local executor; :mod:`loralab.study.ray_executor` runs the same plan on a Ray cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from loralab.experiments.folder import STUDY_LOCK, StudyError, StudyFolder, file_lock
from loralab.experiments.launch import worker_env
from loralab.study.plan import PlannedRun, StudyPlan

POLL_SECONDS = 0.2


@dataclass
class StudyOutcome:
    """What one ``study run`` did."""

    skipped: list[str] = field(default_factory=list)  # complete before this invocation
    trained: list[str] = field(default_factory=list)
    failed: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Running:
    run: PlannedRun
    proc: subprocess.Popen
    log_file: object
    log_start: int
    started: float
    devices: list[str] = field(default_factory=list)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    return max(1, cpu_count() // max(1, jobs))


def visible_gpus() -> list[str]:
    """The GPU ids runs may be given: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def default_gpus_per_run() -> int:
    import torch

    return 1 if torch.cuda.is_available() else 0


def plan_gpus(jobs: int, gpus_per_run: int | None) -> tuple[int, list[str], int]:
    """``(gpus per run, the device pool, jobs)``: jobs capped so that every run has its own devices."""
    g = default_gpus_per_run() if gpus_per_run is None else gpus_per_run
    if g < 0:
        raise StudyError(f"--gpus-per-run must be >= 0, got {g}")
    if g == 0:
        return 0, [], jobs
    pool = visible_gpus()
    if len(pool) < g:
        raise StudyError(f"--gpus-per-run {g}: only {len(pool)} GPU(s) visible (CUDA_VISIBLE_DEVICES or torch)")
    return g, pool, min(jobs, len(pool) // g)


def run_study(
    plan: StudyPlan,
    jobs: int = 1,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
    gpus_per_run: int | None = None,
) -> StudyOutcome:
    """Run every unfinished run of ``plan``; returns what was skipped, trained and failed."""
    if jobs < 1:
        raise StudyError(f"--jobs must be at least 1, got {jobs}")
    gpus, pool, jobs = plan_gpus(jobs, gpus_per_run)
    threads = threads or default_threads(jobs)
    folder = StudyFolder(plan.root)
    folder.root.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(folder.root / STUDY_LOCK, blocking=False):
            return _run_locked(plan, folder, jobs, threads, echo, gpus, pool)
    except BlockingIOError:
        raise StudyError(f"{folder.root}: another `loralab study run` is using this study folder") from None


def prepare(
    plan: StudyPlan, folder: StudyFolder, outcome: StudyOutcome, echo: Callable[[str], None], how: str
) -> tuple[list[PlannedRun], dict[str, dict]]:
    """What every executor does first: write study.json, find the unfinished runs, sweep stale
    staging, note foreign folders, drop stale failures. Returns (runs to do, failures so far)."""
    folder.write_study(plan.to_json())
    planned = {r.id for r in plan.runs}
    todo: list[PlannedRun] = []
    for run in plan.runs:
        if folder.is_complete(run.id):
            outcome.skipped.append(run.id)
        else:
            todo.append(run)
    echo(
        f"study {plan.spec.name}: {len(plan.cells)} cells x {len(plan.spec.seeds)} seeds = {len(plan.runs)} runs, "
        f"{len(outcome.skipped)} already done; {how} -> {folder.root}"
    )
    if removed := folder.sweep_stale_staging():
        echo(f"removed {removed} staging folder(s) left by killed runs")
    if folder.runs_dir.is_dir():
        foreign = [p.name for p in folder.runs_dir.iterdir() if not p.name.startswith(".") and p.name not in planned]
        if foreign:
            echo(f"note: {len(foreign)} run folder(s) in {folder.runs_dir} are not in this study's plan (left alone)")
    # failures of runs that are gone from the plan or finished since are dropped
    failures = {k: v for k, v in folder.read_failures().items() if k in planned and not folder.is_complete(k)}
    folder.write_failures(failures)
    folder.logs_dir.mkdir(parents=True, exist_ok=True)
    return todo, failures


class Progress:
    """The progress line every executor prints: ``[study m:ss] event | done d/t, running ...``."""

    def __init__(self, plan: StudyPlan, outcome: StudyOutcome, echo: Callable[[str], None]) -> None:
        self.plan, self.outcome, self.echo, self.t0 = plan, outcome, echo, time.perf_counter()

    def __call__(self, event: str, running: int, left: int) -> None:
        done = len(self.outcome.skipped) + len(self.outcome.trained)
        self.echo(
            f"[{self.plan.spec.name} {clock(time.perf_counter() - self.t0)}] {event} | done {done}/"
            f"{len(self.plan.runs)}, running {running}, failed {len(self.outcome.failed)}, left {left}"
        )


def record_failure(
    failures: dict, outcome: StudyOutcome, folder: StudyFolder, run: PlannedRun, rc: int, error: str, secs: float
) -> None:
    failures[run.id] = {
        "cell": run.cell,
        "seed": run.seed,
        "returncode": rc,
        "error": error,
        "log": str(folder.log_path(run.id).relative_to(folder.root)),
        "seconds": round(secs, 1),
        "time": _now(),
    }
    outcome.failed[run.id] = failures[run.id]
    folder.write_failures(failures)


def _run_locked(
    plan: StudyPlan,
    folder: StudyFolder,
    jobs: int,
    threads: int,
    echo: Callable[[str], None],
    gpus: int = 0,
    pool: list[str] | None = None,
) -> StudyOutcome:
    t0 = time.perf_counter()
    outcome = StudyOutcome()
    how = f"{jobs} job(s) x {threads} torch thread(s)" + (f" x {gpus} GPU(s)" if gpus else "")
    todo, failures = prepare(plan, folder, outcome, echo, how)
    free = list(pool or [])
    running: list[_Running] = []
    progress = Progress(plan, outcome, echo)

    try:
        while todo or running:
            while todo and len(running) < jobs and len(free) >= gpus:
                run = todo.pop(0)
                devices, free = free[:gpus], free[gpus:]
                running.append(_start(run, folder, threads, devices, plan.spec.name))
                progress(
                    f"start {run.id}" + (f" on GPU {','.join(devices)}" if devices else ""), len(running), len(todo)
                )
            time.sleep(POLL_SECONDS)
            for item in list(running):
                rc = item.proc.poll()
                if rc is None:
                    continue
                running.remove(item)
                free += item.devices
                item.log_file.close()
                secs = time.perf_counter() - item.started
                if rc == 0 and folder.is_complete(item.run.id):
                    outcome.trained.append(item.run.id)
                    failures.pop(item.run.id, None)
                    folder.write_failures(failures)
                    progress(f"done  {item.run.id} in {clock(secs)}", len(running), len(todo))
                else:
                    error = _failure_line(folder, item, rc)
                    record_failure(failures, outcome, folder, item.run, rc, error, secs)
                    progress(f"FAIL  {item.run.id} in {clock(secs)}: {error}", len(running), len(todo))
    except BaseException:
        _stop(running)
        raise
    outcome.seconds = time.perf_counter() - t0
    return outcome


def study_env(study: str, run: PlannedRun) -> dict[str, str]:
    """What a run learns of its study (experiment trackers tag the run with it: loralab.training.tracking)."""
    return {"LORALAB_STUDY": study, "LORALAB_CELL": run.cell, "LORALAB_SEED": str(run.seed)}


def worker_command(run: PlannedRun, folder: StudyFolder, threads: int, processes: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loralab.cli.worker",
        "--study",
        str(folder.root),
        "--run-id",
        run.id,
        "--parent-pid",
        str(os.getpid()),
        "--threads",
        str(threads),
        "--processes",
        str(processes),
        "--",
        *run.train_flags(),
    ]


def _start(
    run: PlannedRun, folder: StudyFolder, threads: int, devices: list[str] | None = None, study: str = ""
) -> _Running:
    env = worker_env(threads, study_env(study, run))
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    log_file = open(folder.log_path(run.id), "ab")  # closed when the run ends
    header = f"=== {_now()} attempt: {' '.join(run.command())}\n"
    log_start = log_file.tell()
    log_file.write(header.encode())
    log_file.flush()
    proc = subprocess.Popen(
        worker_command(run, folder, threads, max(1, len(devices or []))),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return _Running(run, proc, log_file, log_start, time.perf_counter(), list(devices or []))


def _failure_line(folder: StudyFolder, item: _Running, rc: int) -> str:
    """The last non-empty line this attempt wrote (a traceback's last line names the error)."""
    with open(folder.log_path(item.run.id), "rb") as f:
        f.seek(item.log_start)
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()[1:] if ln.strip()]
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}" + (f"; last output: {lines[-1]}" if lines else "")
    if rc == 0:
        return "exited without writing results.json" + (f"; last output: {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"exit code {rc}, no output"


def _stop(running: list[_Running]) -> None:
    """Interrupt the workers (they clean their staging folder on KeyboardInterrupt), then kill."""
    for item in running:
        if item.proc.poll() is None:
            item.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for item in running:
        try:
            item.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.proc.kill()
            item.proc.wait()
        item.log_file.close()


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

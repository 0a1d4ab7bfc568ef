"""``loralab study run`` for real on a tiny model: a run per subprocess, SIGKILL and resume,
a failing cell recorded while the others finish, and the report of the result.

One scenario (module fixture) keeps the suite fast; the tests below check its outcome:
1. ``loralab study run`` starts in a subprocess (one job) on 3 runs: head, lora, and a cell
   whose training file does not exist;
2. as soon as it reports the first run finished, the study process is killed with SIGKILL (the
   run in flight, if already started, dies with it);
3. the study is run again (in-process, two jobs) and must finish the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loralab.cli import main as cli_main
from loralab.experiments.folder import STUDY_LOCK, StudyError, StudyFolder, file_lock
from loralab.study.plan import make_plan
from loralab.study.runner import run_study
from loralab.study.spec import load_spec

DEADLINE_S = 120


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_models, tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    spec_file = tmp / "tiny.yaml"
    spec_file.write_text(
        f"# Run: loralab study run {spec_file}\n"
        "name: tiny\n"
        f"base: {{model: {tiny_models['bert']}, data_dir: {tiny_data}, epochs: 1, batch_size: 16, rank: 4, "
        "alpha: 8, max_length: 48, device: cpu}\n"
        "cells:\n"
        "  - {name: head, method: head}\n"
        "  - {name: lora, method: lora}\n"
        f"  - {{name: broken, method: lora, train_file: {tmp / 'missing.tsv'}}}\n"
        "seeds: [1]\n"
        "baseline: head\n"
    )
    out = tmp / "out"
    plan = make_plan(load_spec(spec_file), out)
    first = StudyFolder(plan.root).run_dir(plan.runs[0].id)
    assert not first.exists()
    log = tmp / "study.out"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loralab",
                "study",
                "run",
                str(spec_file),
                "--out",
                str(out),
                "--jobs",
                "1",
                "--threads",
                "1",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    t0 = time.monotonic()
    while f"done  {plan.runs[0].id}" not in log.read_text():  # the study saw its first run finish
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() - t0 < DEADLINE_S, "the first run did not finish in time"
        time.sleep(0.1)
    first_results = (first / "results.json").stat().st_mtime_ns
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    workers_after_kill = _wait_for_workers_to_exit(out)
    echoed: list[str] = []
    outcome = run_study(plan, jobs=2, threads=1, echo=echoed.append)
    return {
        "plan": plan,
        "outcome": outcome,
        "first_mtime": first_results,
        "echo": echoed,
        "workers_after_kill": workers_after_kill,
        "spec": spec_file,
    }


def _wait_for_workers_to_exit(out: Path) -> int:
    """Worker processes of this study still alive 5 s after the kill (they must die with it)."""
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for pid_dir in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
                if b"loralab.cli.worker" in cmd and str(out).encode() in b" ".join(cmd):
                    alive.append(pid_dir.name)
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_workers_die_with_a_killed_study(killed_and_resumed):
    assert killed_and_resumed["workers_after_kill"] == 0


def test_resume_completes_every_run_exactly_once(killed_and_resumed):
    plan, outcome = killed_and_resumed["plan"], killed_and_resumed["outcome"]
    folder = StudyFolder(plan.root)
    head, lora, broken = plan.runs
    assert outcome.skipped == [head.id]
    assert outcome.trained == [lora.id]
    assert folder.is_complete(head.id) and folder.is_complete(lora.id)
    assert (folder.run_dir(head.id) / "results.json").stat().st_mtime_ns == killed_and_resumed["first_mtime"]
    for run in (head, lora):
        assert folder.log_path(run.id).read_text().count("run written to") == 1
    assert sorted(p.name for p in folder.runs_dir.iterdir()) == sorted([head.id, lora.id])  # no staging left
    config = json.loads((folder.run_dir(lora.id) / "config.json").read_text())
    assert config["command"] == lora.command()  # the equivalent `loralab train` line


def test_a_failing_cell_is_recorded_and_the_others_finish(killed_and_resumed):
    plan, outcome = killed_and_resumed["plan"], killed_and_resumed["outcome"]
    broken = plan.runs[2]
    failures = StudyFolder(plan.root).read_failures()
    assert list(outcome.failed) == list(failures) == [broken.id]
    assert failures[broken.id]["returncode"] == 2
    assert failures[broken.id]["error"] == f"loralab: error: {plan.root.parent / 'missing.tsv'}: file not found"
    assert any("FAIL" in line and broken.id in line for line in killed_and_resumed["echo"])
    assert any("done 2/3, running 0, failed 1, left 0" in line for line in killed_and_resumed["echo"])


def test_report_of_the_resumed_study(killed_and_resumed):
    plan = killed_and_resumed["plan"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["study", "report", str(plan.root)]) == 0
    md = (plan.root / "report.md").read_text()
    head, lora, broken = plan.runs
    for run in (head, lora):
        acc = json.loads((StudyFolder(plan.root).run_dir(run.id) / "results.json").read_text())["test"]["accuracy"]
        assert f"| {run.id} | {run.cell} | 1 | done | " in md and f"{100 * acc:.1f}%" in md
    assert f"| {broken.id} | broken | 1 | failed |" in md
    assert (plan.root / "report.html").is_file() and (plan.root / "summary.csv").is_file()


def test_a_second_study_run_on_a_busy_folder_is_refused(killed_and_resumed):
    plan = killed_and_resumed["plan"]
    with file_lock(plan.root / STUDY_LOCK), pytest.raises(StudyError, match="another `loralab study run`"):
        run_study(plan)


def test_stale_staging_is_removed_unless_its_run_is_being_written(tmp_path):
    folder = StudyFolder(tmp_path)
    stale = folder.runs_dir / ".cell-seed1-0123abcd.x8k2m1q0.partial"
    live = folder.runs_dir / ".cell-seed2-89abcdef.p0o9i8u7.partial"
    trash = folder.runs_dir / ".cell-seed3-00000000.old-4242"
    kept = folder.runs_dir / "cell-seed1-0123abcd"
    for d in (stale, live, trash, kept):
        d.mkdir(parents=True)
    with file_lock(folder.lock_path("cell-seed2-89abcdef")):
        assert folder.sweep_stale_staging() == 2
    assert sorted(p.name for p in folder.runs_dir.iterdir()) == sorted([live.name, kept.name])


def test_a_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    """Held by another process: a non-blocking attempt raises BlockingIOError; once the holder is
    killed with SIGKILL, the lock is free (the OS releases it, nothing is left to clean up)."""
    path = tmp_path / "locks" / "run.lock"
    code = (
        "import sys, time; from pathlib import Path; from loralab.experiments.folder import file_lock\n"
        "with file_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError), file_lock(path, blocking=False):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=DEADLINE_S)
    with file_lock(path, blocking=False):
        pass

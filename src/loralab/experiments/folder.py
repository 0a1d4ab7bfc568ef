"""The study folder: its layout, its JSON files, its locks and the clean-up of stale staging.

Layout::

    STUDY/
      study.json          resolved spec, cells (with their resolved options) and runs (id, cell,
                          seed, dir, equivalent `loralab train` command); written atomically
      failures.json       runs whose last attempt failed: exit code, last line of the log
      runs/<id>/          one complete run directory per (cell, seed) (see loralab.runs.layout)
      logs/<id>.log       stdout + stderr of every attempt of that run, appended
      report.md, report.html, summary.csv, plots/*.png      (``loralab study report``)
      .study.lock         held by the `loralab study run` that is using the folder
      .locks/<id>.lock    held by the worker process that is training that run

A run directory is complete iff it holds ``results.json`` (the core renames it into place only
when complete). A killed worker leaves its hidden staging folder ``runs/.<id>.<random>.partial``;
it is removed by the next worker of the same run, or by the next ``study run``, once the run's
lock shows that nobody is writing it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from loralab.errors import LoralabError
from loralab.files import atomic_write_json, read_json
from loralab.runs.layout import RESULTS_FILE, RUNS_DIR, STUDY_FILE

FAILURES_FILE = "failures.json"
LOGS_DIR = "logs"
LOCKS_DIR = ".locks"
STUDY_LOCK = ".study.lock"
#: A tuned study's searches (``STUDY/tune/<cell>/``) and their record (``STUDY/tuning.json``).
TUNE_DIR = "tune"
TUNING_FILE = "tuning.json"
#: Hidden leftovers of files.atomic_dir: ``.<id>.<random>.partial`` and ``.<id>.old-<pid>``.
_STAGING_RE = re.compile(r"^\.(?P<id>.+)\.(?:[^.]+\.partial|old-\d+)$")


class StudyError(LoralabError):
    """A study folder is missing, unreadable or busy."""


@dataclass(frozen=True)
class StudyFolder:
    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def log_path(self, run_id: str) -> Path:
        return self.logs_dir / f"{run_id}.log"

    def lock_path(self, run_id: str) -> Path:
        return self.root / LOCKS_DIR / f"{run_id}.lock"

    def is_complete(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / RESULTS_FILE).is_file()

    # ---- JSON files --------------------------------------------------------------------------
    def read_study(self) -> dict:
        path = self.root / STUDY_FILE
        if not path.is_file():
            raise StudyError(f"{self.root}: not a study folder (no {STUDY_FILE}; run `loralab study run` first)")
        return read_json(path)

    def write_study(self, data: dict) -> None:
        atomic_write_json(self.root / STUDY_FILE, data)

    def read_failures(self) -> dict[str, dict]:
        path = self.root / FAILURES_FILE
        return read_json(path) if path.is_file() else {}

    def write_failures(self, failures: dict[str, dict]) -> None:
        atomic_write_json(self.root / FAILURES_FILE, failures)

    # ---- stale staging -----------------------------------------------------------------------
    def staging_of(self, run_id: str | None = None) -> list[Path]:
        """Hidden staging/trash folders in ``runs/`` (of one run, or of all)."""
        if not self.runs_dir.is_dir():
            return []
        out = []
        for p in sorted(self.runs_dir.iterdir()):
            m = _STAGING_RE.match(p.name)
            if m and (run_id is None or m.group("id") == run_id):
                out.append(p)
        return out

    def remove_stale_staging(self, run_id: str) -> int:
        """Remove the staging folders of ``run_id``. The caller must hold the run's lock."""
        stale = self.staging_of(run_id)
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        return len(stale)

    def sweep_stale_staging(self) -> int:
        """Remove every staging folder whose run nobody is writing (its lock is free)."""
        removed = 0
        for p in self.staging_of():
            rid = _STAGING_RE.match(p.name).group("id")
            with contextlib.suppress(BlockingIOError), file_lock(self.lock_path(rid), blocking=False):
                removed += self.remove_stale_staging(rid)
        return removed


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive lock on ``path`` (created, with its folder, if needed), released on exit or
    when the process dies, even by SIGKILL (an OS lock: ``filelock`` uses ``flock``). Non-blocking:
    raises :class:`BlockingIOError` if another holder has it (a second ``file_lock`` of the same
    path in the same process counts as another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(blocking=blocking)
    except Timeout:
        raise BlockingIOError(f"{path} is locked") from None
    try:
        yield
    finally:
        lock.release()

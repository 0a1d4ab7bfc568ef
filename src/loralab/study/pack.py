"""A study's report inputs as one small archive: ``loralab study pack`` and ``study unpack``.

A study folder holds gigabytes of weights but a report needs only each finished run's
``config.json``, ``results.json``, ``metrics.csv`` and prediction files, the study's ``study.json``
and ``tuning.json``, and a tuned study's search databases. Packed (``tar.xz``, a few hundred KB per
study) they can be kept in the repository; unpacked, the folder is a study folder again: ``study
report`` rebuilds the report and the docs' excerpts from it, and ``study run`` resumes it, training
only the runs that are not in the archive (a packed run counts as complete; its weights are not
there, so it cannot be exported or served).

The archive is deterministic (sorted members, no owners, times at zero) so that packing the same
study twice gives the same bytes, and it is written and unpacked atomically.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loralab.experiments.folder import TUNE_DIR, TUNING_FILE, StudyError
from loralab.runs.layout import CONFIG_FILE, METRICS_FILE, RESULTS_FILE, RUNS_DIR, STUDY_FILE

RUN_FILES = (CONFIG_FILE, RESULTS_FILE, METRICS_FILE)
PREDICTIONS = re.compile(r"predictions_[\w-]+\.csv")
SEARCH_FILES = ("tune.db", "tune.json")
SUFFIX = ".tar.xz"


@dataclass(frozen=True)
class Packed:
    path: Path
    runs: int
    files: int
    bytes: int


def report_inputs(root: Path) -> list[Path]:
    """The files of study folder ``root`` that reports and resumption read, relative to it, sorted:
    finished runs only (a run without ``results.json`` is not complete and is left out)."""
    out = [Path(name) for name in (STUDY_FILE, TUNING_FILE) if (root / name).is_file()]
    runs = root / RUNS_DIR
    for run in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []:
        if not (run / RESULTS_FILE).is_file():
            continue
        names = [n for n in RUN_FILES if (run / n).is_file()]
        names += sorted(p.name for p in run.iterdir() if PREDICTIONS.fullmatch(p.name))
        out += [run.relative_to(root) / n for n in names]
    tune = root / TUNE_DIR
    for search in sorted(p for p in tune.iterdir() if p.is_dir()) if tune.is_dir() else []:
        out += [search.relative_to(root) / n for n in SEARCH_FILES if (search / n).is_file()]
    return out


def pack_study(root: str | Path, out: str | Path | None = None) -> Packed:
    """Write the report inputs of study folder ``root`` to ``out`` (default: ``<root>.tar.xz``);
    members are named ``<study name>/<path>``."""
    root = Path(root)
    if not (root / STUDY_FILE).is_file():
        raise StudyError(f"{root}: not a study folder (no {STUDY_FILE})")
    out = Path(out) if out is not None else root.with_name(root.name + SUFFIX)
    if not out.name.endswith(SUFFIX):
        raise StudyError(f"--out {out}: the archive's name must end in {SUFFIX}")
    if not out.resolve().parent.is_dir():
        raise StudyError(f"--out {out}: the folder {out.resolve().parent} does not exist")
    files = report_inputs(root)
    try:
        name = json.loads((root / STUDY_FILE).read_text(encoding="utf-8"))["name"]
    except (ValueError, KeyError) as e:
        raise StudyError(f"{root / STUDY_FILE}: unreadable ({e})") from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for rel in files:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(f"{name}/{rel.as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    from loralab.files import atomic_write_bytes

    atomic_write_bytes(out, buf.getvalue())
    n_runs = sum(1 for f in files if f.name == RESULTS_FILE)
    return Packed(out, n_runs, len(files), len(buf.getvalue()))


def unpack_study(archive: str | Path, dest: str | Path) -> Path:
    """Unpack an archive written by :func:`pack_study` into the study folder ``dest`` (which must
    not exist yet, or be empty); returns it."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise StudyError(f"{archive}: no such archive")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StudyError(f"{dest}: exists and is not empty; unpack into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                members = tar.getmembers()
                tops = {m.name.split("/", 1)[0] for m in members}
                if len(tops) != 1 or not all(m.isfile() for m in members):
                    raise StudyError(f"{archive}: not a study archive (one folder of plain files expected)")
                tar.extractall(staging, filter="data")  # refuses absolute paths, links out, devices
        except (tarfile.TarError, EOFError, OSError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise StudyError(f"{archive}: unreadable archive ({why})") from None
        (top,) = tops
        if not (staging / top / STUDY_FILE).is_file():
            raise StudyError(f"{archive}: not a study archive (no {top}/{STUDY_FILE})")
        if dest.exists():
            dest.rmdir()
        os.replace(staging / top, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest

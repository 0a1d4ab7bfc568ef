"""Files written whole or not at all: atomic writes (temporary file, fsync, rename), staging
folders renamed into place, and reading JSON back with one-line errors.

The lowest layer of loralab's I/O: run directories (:mod:`loralab.runs`), the token cache
(:mod:`loralab.data.tokens`), figures, study and search folders all write through it, so a killed
process never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from loralab.errors import RunDirError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: str | Path, columns: list[str], rows: Iterable[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunDirError(f"{path}: already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(staging, file_mode(directory=True))
    try:
        yield staging
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            os.replace(staging, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_staging(path: str | Path) -> int:
    """Remove the hidden staging folders that killed attempts to write ``path`` left behind (the
    caller knows that no other process is writing it). Returns how many were removed."""
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.partial")) if path.parent.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def file_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (``mkdir()`` with ``directory``) gives: 0666 (0777) less the
    process umask. Files written through a temporary file would otherwise stay 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None

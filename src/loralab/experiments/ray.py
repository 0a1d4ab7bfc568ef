"""Runs on a Ray cluster, for studies and searches alike: one submit/wait/land loop
(:func:`run_tasks`), the resources a task asks for, and how a finished run directory travels.

**No shared filesystem is needed for results.** A task trains into a temporary folder on
whichever node Ray picked, packs the finished run directory into a tar archive
(:func:`pack_dir`) and returns it through Ray's object store; the driver unpacks it into a hidden
staging folder and renames it into place (:func:`land_archive`), so a run lands complete or not
at all. Killing the driver ends its tasks (Ray cancels the tasks of a dead driver).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loralab.experiments.folder import StudyError
from loralab.files import atomic_dir

EXTRA_HINT = "pip install 'loralab[ray]'"
#: Retries of a task whose worker or node died (Ray's ``max_retries``; a task that *fails* is not
#: retried). Safe: a task trains in a temporary folder of its own and its run lands once, atomically.
MAX_RETRIES = 3


class LandingError(StudyError):
    """A finished run's archive could not be landed (truncated archive, full disk, ...)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise StudyError(f"--executor ray needs Ray: {EXTRA_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` (a local cluster when None) unless this process already is;
    a connection made here is closed on the way out."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def largest_node(ray) -> dict[str, float]:
    """The most CPUs and GPUs one live node of the cluster has: a task runs on one node, so a run
    asking for more than that would wait forever."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    return {key: max((float(n.get(key, 0)) for n in nodes), default=0.0) for key in ("CPU", "GPU")}


def task_gpus(node: dict, threads: int, gpus_per_run: int | None) -> int:
    """GPUs per task (default: 1 where the cluster has GPUs), after checking that one node (the
    largest, :func:`largest_node`) has them and ``threads`` CPUs."""
    gpus = gpus_per_run if gpus_per_run is not None else (1 if node.get("GPU", 0) > 0 else 0)
    if gpus > node.get("GPU", 0):
        raise StudyError(
            f"--gpus-per-run {gpus}: no node of the Ray cluster has that many GPUs "
            f"(the largest has {int(node.get('GPU', 0))})"
        )
    if threads > node.get("CPU", 0):
        raise StudyError(
            f"--threads {threads}: no node of the Ray cluster has that many CPUs "
            f"(the largest has {int(node.get('CPU', 0))})"
        )
    return gpus


def run_tasks(
    ray,
    submit: Callable[[], tuple[Any, Any] | None],
    on_done: Callable[[Any, dict, int], None],
    max_in_flight: int | None = None,
    on_abort: Callable[[Any], None] | None = None,
) -> None:
    """Keep up to ``max_in_flight`` tasks running (all when None): ``submit()`` starts the next one
    and returns ``(ref, context)``, or None when there is nothing more to start. As each task ends,
    ``on_done(context, result, still_running)`` gets the dict it returned, or ``{"error": ...}`` for
    a task that died (node lost, out of memory): one failed task, never the end of the loop. On
    an exception (Ctrl-C included) the tasks in flight are cancelled, ``on_abort(context)`` is
    called for each, and the exception goes on."""
    pending: dict = {}
    try:
        while True:
            while max_in_flight is None or len(pending) < max_in_flight:
                started = submit()
                if started is None:
                    break
                pending[started[0]] = started[1]
            if not pending:
                return
            [ref], _ = ray.wait(list(pending), num_returns=1)
            context = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # a task that died is one failed task
                result = {"error": f"ray task failed: {type(e).__name__}: {e}"}
            on_done(context, result, len(pending))
    except BaseException:
        for ref, context in pending.items():
            ray.cancel(ref, force=True)
            if on_abort is not None:
                on_abort(context)
        raise


def pack_dir(path: Path) -> bytes:
    """A finished run directory's contents as a tar archive, to travel through Ray's object store."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=".")
    return buf.getvalue()


def land_archive(path: Path, archive: bytes) -> None:
    """Unpack a run directory archive into a hidden staging folder beside ``path``, then rename it
    into place (:func:`loralab.files.atomic_dir`: a folder already there, incomplete and not made
    by loralab, is replaced). A broken archive or a failed write is a :class:`LandingError` and
    leaves nothing behind: the caller records that one run as failed."""
    try:
        with atomic_dir(path, overwrite=True) as staging, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LandingError(f"{path}: the run's archive could not be landed ({type(e).__name__}: {e})") from None

"""The rules of a set of served adapters, enforced in one place under one small lock.

:class:`AdapterRegistry` is the bookkeeping of a
:class:`~loralab.inference.adapters.MultiAdapterPredictor`: which adapters are served, which one
answers requests that name none (the default), which names and run directories are being loaded,
and how many adapters may be loaded at once. Adding an adapter is three steps:

1. :meth:`~AdapterRegistry.reserve` (under the registry's lock): the name and the run directory
   are checked and held, so a second request for either fails at once;
2. the weights are read with no lock held (the model keeps scoring batches meanwhile);
3. :meth:`~AdapterRegistry.publish` (under the model's lock, between two batches): the adapter
   becomes visible; or :meth:`~AdapterRegistry.release` when reading failed.

Removing one is :meth:`~AdapterRegistry.withdraw`: the last adapter is never removed, and the
default adapter only when a new default is named, all decided under the same lock.

Also here: the rules on adapter names, and :func:`read_lora_run`, which reads a run for an adapter
and, given the adapter roots, first checks that every file it opens lies under them once symbolic
links are resolved.

The lock is short-held and never taken around model work: the model's lock (held for one batch at
a time) is always taken *before* this one, never after, so the two cannot deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from loralab.errors import LoralabError
from loralab.inference.multilora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterError


class UnknownAdapterError(LoralabError):
    """A request named an adapter that is not loaded (HTTP 404)."""


class AdapterConflictError(AdapterError):
    """The served adapters forbid the change: a name or a run already served, the last or the
    default adapter, the cap reached (HTTP 409)."""


class AdapterPathError(AdapterError):
    """A file of an adapter lies outside the folders adapters may be read from (HTTP 403)."""


class AdapterRegistry:
    """Served adapters by name (``adapters``: replaced, never changed in place, so readers take a
    consistent snapshot without locking), the default adapter, pending loads and the cap."""

    def __init__(self, max_adapters: int | None = None) -> None:
        if max_adapters is not None and max_adapters < 1:
            raise AdapterError(f"--max-adapters must be at least 1, got {max_adapters}")
        self.max_adapters = max_adapters
        self.adapters: dict = {}  # name -> Adapter (anything with .name and .run_dir)
        self.default: str | None = None
        self._pending: dict[str, Path] = {}  # name -> run directory being loaded
        self._lock = threading.Lock()

    # ---- adding ----------------------------------------------------------------------------
    def reserve(self, name: str, run_dir: Path) -> None:
        """Hold ``name`` and ``run_dir`` (resolved) for an adapter about to be loaded, or raise
        :class:`AdapterConflictError`: the name or the run is served or being loaded, or the cap is reached."""
        with self._lock:
            if name in self.adapters or name in self._pending:
                state = "served" if name in self.adapters else "being loaded"
                raise AdapterConflictError(f"an adapter named {name!r} is already {state}")
            served = {a.run_dir: a.name for a in self.adapters.values()} | {d: n for n, d in self._pending.items()}
            if run_dir in served:
                raise AdapterConflictError(f"{run_dir}: this run is already served as {served[run_dir]!r}")
            loaded = len(self.adapters) + len(self._pending)
            if self.max_adapters is not None and loaded >= self.max_adapters:
                raise AdapterConflictError(
                    f"{loaded} adapters are loaded or loading, the most this server keeps "
                    f"(--max-adapters {self.max_adapters}): remove one first"
                )
            self._pending[name] = run_dir

    def release(self, name: str) -> None:
        """Give up a reservation whose loading failed."""
        with self._lock:
            self._pending.pop(name, None)

    def publish(self, adapter) -> None:
        """Make a reserved adapter visible (the caller holds the model's lock and has installed
        its weights). The first adapter becomes the default."""
        with self._lock:
            if self._pending.get(adapter.name) != adapter.run_dir:
                raise AdapterError(f"adapter {adapter.name!r} was not reserved")  # a programming error
            del self._pending[adapter.name]
            self.adapters = {**self.adapters, adapter.name: adapter}
            if self.default is None:
                self.default = adapter.name

    # ---- removing and the default ----------------------------------------------------------
    def withdraw(self, name: str, new_default: str | None = None):
        """Stop serving ``name`` and return its adapter (the caller then removes its weights).
        Refused: an unknown name (:class:`UnknownAdapterError`), the last adapter, the default
        adapter without ``new_default``, a ``new_default`` that is ``name`` itself
        (:class:`AdapterConflictError`) or not served (:class:`UnknownAdapterError`)."""
        with self._lock:
            adapter = self.adapters.get(name)
            if adapter is None:
                raise UnknownAdapterError(f"unknown adapter {name!r} (GET /adapters lists the served ones)")
            if len(self.adapters) == 1:
                raise AdapterConflictError(f"{name!r} is the last adapter: a server keeps at least one")
            if new_default is not None:
                if new_default == name:
                    raise AdapterConflictError(f"new_default {name!r} is the adapter being removed: name another")
                if new_default not in self.adapters:
                    raise UnknownAdapterError(f"new_default: unknown adapter {new_default!r}")
            elif name == self.default:
                others = [n for n in self.adapters if n != name]
                raise AdapterConflictError(
                    f"{name!r} is the default adapter (clients that name no adapter get it): name the new "
                    f"default, e.g. DELETE /adapters/{name}?new_default={others[0]}"
                )
            self.adapters = {k: v for k, v in self.adapters.items() if k != name}
            if new_default is not None:
                self.default = new_default
            return adapter

    def snapshot(self) -> tuple[dict, str | None]:
        """``(adapters, default)``, consistent with each other (the default is always served)."""
        with self._lock:
            return self.adapters, self.default

    def set_default(self, name: str) -> None:
        with self._lock:
            if name not in self.adapters:
                raise UnknownAdapterError(f"no adapter named {name!r} (served: {', '.join(self.adapters)})")
            self.default = name

    @property
    def pending(self) -> list[str]:
        """Names of the adapters being loaded."""
        with self._lock:
            return list(self._pending)


# ---------------------------------------------------------------------------------------------
# Names, and the files an adapter is read from
# ---------------------------------------------------------------------------------------------

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-=+")


def adapter_name(run_dir: str | Path) -> str:
    """An adapter's default name: its run folder's name."""
    return Path(os.path.abspath(run_dir)).name  # the name as given: a symbolic link keeps its own


def check_adapter_name(name: str) -> None:
    if not name or len(name) > 200 or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise AdapterError(f"adapter name {name!r}: use letters, digits and . _ - = + (at most 200 characters)")


def check_under_roots(files: Sequence[Path], roots: Sequence[Path]) -> None:
    """With ``roots`` (resolved folders; none: no bound), refuse any of ``files`` that lies
    outside them once symbolic links are resolved (:class:`AdapterPathError`), before any is opened."""
    for file in files if roots else ():
        target = file.resolve()
        if not any(target.is_relative_to(root) for root in roots):
            raise AdapterPathError(f"{file}: a symbolic link that leads out of the adapter roots: refused")


def read_lora_run(run_dir: str | Path, roots: Sequence[Path] = ()) -> tuple[Path, dict, dict]:
    """``(run_dir, config.json, results.json)`` of a complete LoRA run with safetensors weights.
    With ``roots`` (resolved folders), every file that is read must lie under one of them once
    symbolic links are resolved (:class:`AdapterPathError` otherwise), checked before any is opened."""
    from loralab.files import read_json
    from loralab.runs.layout import ADAPTER_DIR, CONFIG_FILE, RESULTS_FILE, check_run_dir

    run_dir = Path(run_dir)
    names = (CONFIG_FILE, RESULTS_FILE, f"{ADAPTER_DIR}/{ADAPTER_CONFIG}", f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}")
    check_under_roots([run_dir / name for name in names], roots)
    check_run_dir(run_dir)
    meta = read_json(run_dir / CONFIG_FILE)
    method = meta["config"]["method"]["method"]
    if method != "lora":
        raise AdapterError(
            f"{run_dir}: a {method} run, not LoRA: only a LoRA run's low-rank updates (B·A added to a layer's "
            "output) share a backbone as adapters here; serve it alone"
        )
    data = meta["config"]["data"]
    if data.get("text_pair_column") or data.get("task") == "regression":
        kind = "a sentence-pair run" if data.get("text_pair_column") else "a regression run"
        raise AdapterError(f"{run_dir}: {kind}: adapters served together classify single texts; serve it alone")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (run_dir / ADAPTER_DIR / name).is_file():
            raise AdapterError(f"{run_dir / ADAPTER_DIR / name}: not found (adapters are read from safetensors only)")
    return run_dir, meta, read_json(run_dir / RESULTS_FILE)

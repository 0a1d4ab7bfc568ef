"""Training checkpoints of a run in progress: what is saved, where, how it is written atomically
and how ``--resume`` reads it back.

A checkpoint lives beside the run directory it belongs to, in ``.<run>.checkpoint/`` (hidden, and
never mistaken for a staging folder), as ``step-<N>/`` folders and ``latest.json`` naming the newest
complete one. Every rank writes its own random-number states (``rng-<rank>.pt``) into the step
folder, the main process writes ``state.pt`` (trainable weights, optimizer, scheduler, grad scaler,
the best epoch's weights, the history and the position in the epoch), and only when every rank has
finished does ``latest.json`` move to the new folder (an atomic rename) and the older folders go.
A process killed at any moment therefore leaves the previous checkpoint intact.

Resuming is decided by rank 0 alone (is there a checkpoint, were its options the same) and that
decision is broadcast, so every rank resumes from the same folder or every rank starts afresh.
Options that leave the global batches alone (``--grad-accum``, the number of processes, trackers,
where the run is written) may change between the killed run and its resumption: the change is
logged, and where the number of processes changed, each rank's random-number streams are
re-derived from the seed, its rank and the step (:func:`reseed`) instead of restored.

Hand-written rather than ``accelerate.save_state``: that writes in place (a kill mid-write loses the
only checkpoint) and saves every frozen weight of the backbone; here only what training changes
is saved, and the position inside the epoch is part of the state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralab.config import OUTPUT_OPTIONS
from loralab.errors import LoralabError

log = logging.getLogger(__name__)

LATEST = "latest.json"
STATE = "state.pt"
#: Options that change neither the global batches nor what is computed from them (a study's run id
#: leaves the same ones out): a resumption may change them.
BATCH_NEUTRAL = ("grad_accum", "report_to")
#: Options that may differ between the killed run and its resumption.
RESUMABLE_CHANGES = (*OUTPUT_OPTIONS, *BATCH_NEUTRAL)


class CheckpointError(LoralabError):
    """A checkpoint that cannot be resumed (another config, another world size, unreadable)."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where the checkpoints of the run that will be written to ``run_dir`` live."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.checkpoint")


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reseed(seed: int, rank: int, steps: int) -> None:
    """Seed this process's generators (Python, numpy, torch on every device) from the run's
    ``seed``, the ``rank`` and the optimizer ``steps`` taken: the random-number streams of a run
    resumed on another number of processes, where no saved state belongs to a rank."""
    digest = hashlib.sha256(f"loralab-resume:{seed}:{rank}:{steps}".encode()).digest()
    value = int.from_bytes(digest[:8], "little") >> 1
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config (nested, as ``RunConfig.to_dict``) without the options a resumption may change."""
    return {g: {k: v for k, v in values.items() if k not in RESUMABLE_CHANGES} for g, values in config.items()}


@dataclass
class Checkpoints:
    """The checkpoints of one run: saved every ``every`` optimizer steps and/or at each epoch's end."""

    root: Path
    every_steps: int | None = None  # None: no step checkpoints
    at_epoch_end: bool = True
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.at_epoch_end or bool(self.every_steps)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        try:
            folder = self.root / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({e})") from None
        return folder if (folder / STATE).is_file() else None

    def save(self, steps: int, state: Callable[[], dict[str, Any]], barrier: Callable[[], None]) -> None:
        """Write a checkpoint of step ``steps``. Collective: every rank calls it at the same step;
        ``state`` is called on the main process only; ``barrier`` waits for every rank."""
        folder = self.root / f"step-{steps:08d}"
        main = self.rank == 0
        if main:
            shutil.rmtree(folder, ignore_errors=True)  # a half-written folder of a killed attempt
        barrier()
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(rng_state(), folder / f"rng-{self.rank}.pt")
        if main:
            payload = state()
            payload["world_size"] = self.world_size
            _atomic_torch_save(payload, folder / STATE)
        barrier()
        if main:
            tmp = self.root / (LATEST + ".tmp")
            tmp.write_text(json.dumps({"folder": folder.name, "steps": steps}), encoding="utf-8")
            tmp.replace(self.root / LATEST)
            for old in self.root.glob("step-*"):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)
        barrier()

    def load(self, config: dict[str, Any], share: Callable[[Any], Any] | None = None) -> dict[str, Any] | None:
        """The latest checkpoint's state, with this rank's RNG states under ``"rng"`` (None where they
        are to be re-derived: another number of processes), or None if there is none.

        Collective: rank 0 decides (which checkpoint, or none; a checkpoint of other options is a
        :class:`CheckpointError`) and ``share`` (a broadcast from rank 0; not needed on one process)
        hands that decision to every rank, so that all ranks resume from one folder or all start
        afresh, even where some rank sees another filesystem."""
        main = self.rank == 0
        decision: dict[str, Any] | None = None
        state = None
        if main:
            try:
                folder = self.latest()
                if folder is not None:
                    state = _read(folder / STATE)
                    self._check_options(state, config)
                decision = {"folder": folder.name if folder is not None else None}
            except CheckpointError as e:
                decision = {"error": str(e)}
        decision = share(decision) if share is not None else decision
        if decision.get("error"):
            raise CheckpointError(decision["error"])
        if decision["folder"] is None:
            if main:
                log.warning("--resume: no checkpoint in %s; training from scratch", self.root)
            return None
        folder = self.root / decision["folder"]
        if state is None:
            try:
                state = _read(folder / STATE, missing_ok=False)
            except FileNotFoundError:
                raise CheckpointError(
                    f"{folder}: rank 0 resumes from it but process {self.rank} cannot read it; on several "
                    "nodes the run directory must be on a filesystem every node sees"
                ) from None
        saved_world = state.get("world_size")
        if saved_world == self.world_size:
            try:
                state["rng"] = _read(folder / f"rng-{self.rank}.pt", missing_ok=False)
            except FileNotFoundError:
                raise CheckpointError(
                    f"{folder}: no random-number state for rank {self.rank}; the checkpoint was taken with "
                    f"{saved_world} process(es) but holds the states of {_saved_world(folder)}"
                ) from None
        else:
            state["rng"] = None  # re-derived by the trainer (reseed)
        if main:
            _log_changes(state, config, saved_world, self.world_size)
        return state

    def _check_options(self, state: dict[str, Any], config: dict[str, Any]) -> None:
        theirs, ours = comparable_config(state["config"]), comparable_config(config)
        if theirs != ours:
            diff = sorted(
                f"{k}: {theirs[g].get(k)!r} -> {ours[g].get(k)!r}"
                for g in ours
                for k in ours[g]
                if theirs.get(g, {}).get(k) != ours[g].get(k)
            )
            raise CheckpointError(
                f"{self.root}: the checkpoint was made with other options ({'; '.join(diff[:3])}); "
                "resume with the same options, or remove the checkpoint folder to start again"
            )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _log_changes(state: dict[str, Any], config: dict[str, Any], saved_world: int | None, world: int) -> None:
    """One warning naming what changed since the checkpoint among the options that keep the global batches."""
    saved = {k: v for values in state["config"].values() for k, v in values.items()}
    ours = {k: v for values in config.values() for k, v in values.items()}
    changes = [
        f"--{k.replace('_', '-')} {saved.get(k)!r} -> {ours.get(k)!r}"
        for k in BATCH_NEUTRAL
        if saved.get(k) != ours.get(k)
    ]
    if saved_world != world:
        changes.insert(0, f"processes {saved_world} -> {world}")
    if not changes:
        return
    streams = (
        "each process's random-number streams are re-derived from the seed, its rank and the step"
        if saved_world != world
        else "each process continues its own random-number streams"
    )
    log.warning(
        "resuming with %s since the checkpoint: the global batches are unchanged; %s", ", ".join(changes), streams
    )


def _read(path: Path, missing_ok: bool = True) -> Any:
    """A checkpoint file; any unreadable file is the same one-line error (a missing one too, unless
    ``missing_ok`` is False: then FileNotFoundError, for the caller's own message)."""
    try:
        # weights_only=False: the file holds RNG states (numpy arrays, tuples) and was written by
        # loralab into the run's own folder, not downloaded
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        if not missing_ok:
            raise
        raise CheckpointError(f"{path.parent}: unreadable checkpoint (no {path.name})") from None
    except Exception as e:
        raise CheckpointError(f"{path.parent}: unreadable checkpoint ({type(e).__name__}: {e})") from None


def _saved_world(folder: Path) -> int:
    return len(list(folder.glob("rng-*.pt")))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)

"""Training checkpoints of a run in progress: what is saved, where, how it is written atomically
and how ``--resume`` reads it back.

A checkpoint lives beside the run directory it belongs to, in ``.<run>.checkpoint/`` (hidden, and
never mistaken for a staging folder), as ``step-<N>/`` folders and ``latest.json`` naming the newest
complete one. Every rank writes its own random-number states (``rng-<rank>.pt``) into the step
folder, the main process writes ``state.pt`` (trainable weights, optimizer, scheduler, grad scaler,
the best epoch's weights, the history and the position in the epoch), and only when every rank has
finished does ``latest.json`` move to the new folder (an atomic rename) and the older folders go.
A process killed at any moment therefore leaves the previous checkpoint intact.

Hand-written rather than ``accelerate.save_state``: that writes in place (a kill mid-write loses the
only checkpoint) and saves every frozen weight of the backbone; here only what training changes
is saved, and the position inside the epoch is part of the state.
"""

from __future__ import annotations

import json
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

LATEST = "latest.json"
STATE = "state.pt"
#: Options that may differ between the killed run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES = OUTPUT_OPTIONS


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

    def load(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The latest checkpoint's state with this rank's RNG states under ``"rng"``, or None if
        there is none. A checkpoint of another config or world size is a :class:`CheckpointError`."""
        folder = self.latest()
        if folder is None:
            return None
        try:
            # weights_only=False: the file holds RNG states (numpy arrays, tuples) and was written by
            # loralab into the run's own folder, not downloaded
            state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
            rng = torch.load(folder / f"rng-{self.rank}.pt", map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise CheckpointError(
                f"{folder}: no random-number state for rank {self.rank}; the checkpoint was taken with "
                f"{_saved_world(folder)} process(es)"
            ) from None
        except Exception as e:  # any unreadable file is the same one-line error
            raise CheckpointError(f"{folder}: unreadable checkpoint ({type(e).__name__}: {e})") from None
        if state.get("world_size") != self.world_size:
            raise CheckpointError(
                f"{folder}: taken with {state.get('world_size')} process(es); resume it with the same number "
                f"(this launch has {self.world_size})"
            )
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
        state["rng"] = rng
        return state

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _saved_world(folder: Path) -> int:
    return len(list(folder.glob("rng-*.pt")))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)

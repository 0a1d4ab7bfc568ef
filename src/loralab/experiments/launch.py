"""How a study or a search starts a process that trains: the command (one process, or torchrun for
several), its environment, and dying with its parent."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int) -> None:
    """On Linux, have ``sig`` sent to this process when its parent dies (elsewhere: nothing). Also
    used as ``preexec_fn`` of the training processes a worker or a Ray task starts."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass


def train_launcher(processes: int) -> list[str]:
    """The command that runs ``loralab`` here: one process, or ``processes`` data-parallel ones (torchrun)."""
    if processes > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "loralab",
        ]
    return [sys.executable, "-m", "loralab"]


def worker_env(threads: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that trains: this one's, with OpenMP/MKL capped at ``threads``
    (so parallel jobs share the cores instead of fighting over them), no tokenizer threads,
    unbuffered output (the log shows progress as it happens), then ``extra``."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }

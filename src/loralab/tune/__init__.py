"""Hyper-parameter search with Optuna (``loralab tune``): a search file, trials as run directories,
shared storage for many workers, and a report. Needs the ``tune`` extra: ``pip install loralab[tune]``."""

from __future__ import annotations

import warnings

from loralab.errors import LoralabError

EXTRA_HINT = "hyper-parameter search needs Optuna: pip install 'loralab[tune]'"


def require_optuna():
    """Import and return ``optuna``, or fail with one line naming the extra."""
    try:
        import optuna
    except ImportError:
        raise LoralabError(EXTRA_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # loralab drives trials with ask/tell and its own heartbeat thread (see runner.py): Optuna's
    # notes about experimental arguments and heartbeats outside `optimize` say nothing to the user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
    return optuna


__all__ = ["EXTRA_HINT", "require_optuna"]

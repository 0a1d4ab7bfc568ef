"""The two things loralab needs that Optuna keeps private: a study's storage and a trial's id in it.

loralab runs trials outside ``study.optimize`` (workers on many machines, Ray tasks, pruning
reports from another process), so it records heartbeats per trial, fails the trials of killed
workers and reports intermediate values through the storage's public methods
(``record_heartbeat``, ``set_trial_state_values``, ``set_trial_intermediate_value``), which take a
trial id. Neither ``Study`` nor ``Trial`` exposes its storage or that id publicly (Optuna 4:
``study._storage``, ``trial._trial_id``; ``FrozenTrial`` has the same private id). Every such
access is here, so an Optuna upgrade that renames them breaks one module.
"""

from __future__ import annotations

from typing import Any


def storage_of(study: Any) -> Any:
    """The ``BaseStorage`` behind ``study``."""
    return study._storage


def trial_id(trial: Any) -> int:
    """The storage id of a ``Trial`` or ``FrozenTrial``."""
    return trial._trial_id

"""Typed configs: flat overrides, coercion, validation with the flag named."""

from __future__ import annotations

import pytest

from loralab.config import DEFAULT_LR, RunConfig
from loralab.errors import ConfigError


def test_flat_round_trip_and_defaults():
    cfg = RunConfig.from_flat({"method": "lora", "rank": "16", "target_modules": "query,key", "train_size": 100})
    assert cfg.method.rank == 16 and cfg.method.target_modules == ["query", "key"]
    assert cfg.data.train_size == 100
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_flat(cfg.to_flat()) == cfg
    assert cfg.lr == DEFAULT_LR["lora"]
    assert RunConfig.from_flat({"method": "full"}).lr == DEFAULT_LR["full"]
    assert RunConfig.from_flat({"lr": 0.1}).lr == 0.1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rnak": 8}, "unknown option 'rnak'"),
        ({"method": "adapter"}, "--method must be one of"),
        ({"rank": 0}, "--rank must be at least 1"),
        ({"rank": "eight"}, "--rank: cannot use 'eight'"),
        ({"dropout": 1.5}, r"--dropout must be in \[0, 1\)"),
        ({"lr": -1}, "--lr must be positive"),
        ({"train_size": 1}, "--train-size must be at least 2"),
        ({"epochs": 2.5}, "--epochs: cannot use 2.5"),
        ({"labels": "a"}, "--labels needs at least two"),
        ({"group_by_length": "maybe"}, "--group-by-length: cannot use"),
        ({"seed": 2**32}, r"--seed must be in \[0, 2\*\*32\)"),
        ({"seed": -1}, r"--seed must be in"),
        ({"device": "tpu"}, "--device must be auto, cpu or cuda"),
    ],
)
def test_invalid_values_name_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_flat(values)


def test_none_method_runs_no_epochs():
    assert RunConfig.from_flat({"method": "none", "epochs": 3}).train.epochs == 0

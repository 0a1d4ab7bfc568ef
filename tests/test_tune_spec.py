"""The search file of ``loralab tune``: parsing, and errors that name the file and the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loralab.errors import ConfigError, LoralabError
from loralab.experiments.search import TuneSpec, load_spec

GOOD = {
    "name": "s",
    "base": {"train_size": 100, "epochs": 2},
    "space": {
        "lr": {"type": "loguniform", "low": "1e-4", "high": 3e-3},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.3, "step": 0.1},
        "rank": {"type": "int", "low": 4, "high": 32, "log": True},
        "target_modules": ["qv", "all-linear", ["query", "value"]],
    },
    "pruner": {"type": "median", "n_warmup_steps": 1},
}


def spec(**changes) -> TuneSpec:
    values = {**GOOD, **changes}
    return TuneSpec.from_dict({k: v for k, v in values.items() if v is not None}, source="s.yaml")


def test_parses_every_distribution_type():
    s = spec()
    kinds = {p.name: p.type for p in s.params}
    assert kinds == {"lr": "loguniform", "dropout": "uniform", "rank": "int", "target_modules": "categorical"}
    lr = next(p for p in s.params if p.name == "lr")
    assert lr.low == pytest.approx(1e-4)  # YAML's "1e-4" (no dot) is text: read as a number
    tm = next(p for p in s.params if p.name == "target_modules")
    assert tm.choices == ("qv", "all-linear", "query,value")  # a list choice is comma-joined, as the flag takes it
    assert s.direction == "maximize" and s.pruner_options() == ("median", {"n_warmup_steps": 1})
    assert spec(metric="loss").direction == "minimize"
    # workers on machines with other data paths share one search
    assert spec(base={"data_dir": "/a"}).fingerprint() == spec(base={"data_dir": "/b"}).fingerprint()
    assert spec().fingerprint() != spec(metric="loss").fingerprint()


def test_metric_defaults_to_the_runs_own_and_trials_select_on_it():
    assert spec().metric == "accuracy"  # base sets no --metric: classification's default
    assert spec(base={"glue": "cola"}).metric == "mcc"  # the preset's
    assert spec(base={"metric": "f1"}).metric == "f1"
    assert spec().fingerprint() == spec(metric="accuracy").fingerprint()  # unset = the default spelled out
    s = spec(metric="mcc", pruner="median")  # every metric is logged per epoch (val_metric): pruning works
    trial = s.trial_config({"lr": 1e-3, "dropout": 0.1, "rank": 8, "target_modules": "qv"})
    assert trial.metric == "mcc" and trial.train.metric == "mcc"
    assert spec().trial_config({"lr": 1e-3, "dropout": 0.1, "rank": 8, "target_modules": "qv"}).train.metric is None


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"spaces": {}}, "unknown key 'spaces'"),
        ({"space": None}, "missing key 'space'"),
        ({"space": {"lr": {"type": "loguniform", "low": 1e-4}}}, "space.lr: needs `high`"),
        ({"space": {"lr": {"type": "gaussian", "low": 1, "high": 2}}}, "space.lr: `type` must be one of"),
        ({"space": {"rank": {"type": "int", "low": 32, "high": 4}}}, "space.rank: `low` (32) must be below `high` (4)"),
        ({"space": {"rank": {"type": "int", "low": 1.5, "high": 4}}}, "space.rank: `low` must be an integer"),
        ({"space": {"lr": {"type": "loguniform", "low": 0, "high": 1}}}, "space.lr: a log scale needs `low` > 0"),
        (
            {"space": {"lr": {"type": "uniform", "low": 1e-4, "high": 1e-3, "choices": [1]}}},
            "space.lr: unknown key 'choices'",
        ),
        ({"space": {"rnak": [4, 8]}}, "space.rnak: 4: unknown option 'rnak'"),
        ({"space": {"method": ["lora", "bogus"]}}, "space.method: 'bogus'"),
        ({"space": {"rank": [4, 4]}}, "space.rank: a choice is listed twice"),
        ({"space": {"seed": [1, 2]}}, "space.seed: set by the search"),
        ({"space": {"epochs": [1, 2]}}, "space.epochs: also set in `base`"),
        ({"base": {"output_dir": "x"}}, "base: option 'output_dir' is set by the search"),
        ({"base": {"rank": "many"}}, "base: --rank: cannot use 'many'"),
        ({"sampler": "grid"}, "sampler grid: space.lr must be a list of values"),
        ({"sampler": "annealing"}, "`sampler` must be one of tpe, random, grid"),
        ({"pruner": {"type": "median", "patience": 2}}, "pruner: unknown option 'patience'"),
        ({"metric": "test_accuracy"}, "`metric` must be one of accuracy, f1, f1_macro"),
        ({"metric": "pearson"}, "metric: --metric pearson does not apply to classification"),
        ({"trials": 0}, "`trials` must be a positive integer"),
        ({"name": "a b"}, "`name` must be a folder-safe name"),
    ],
)
def test_errors_name_the_key(changes, needle):
    with pytest.raises(ConfigError) as e:
        spec(**changes)
    assert str(e.value).startswith("s.yaml: "), e.value
    assert needle in str(e.value), e.value


def test_load_spec_reports_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nspace:\n  lr: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_spec(p)
    with pytest.raises(ConfigError, match="search file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_cli_error_is_one_line(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nspace:\n  rank: {type: int, low: 8, high: 2}\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "tune", str(p), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"loralab: error: {p}: space.rank: `low` (8) must be below `high` (2)"
    assert not (tmp_path / "o").exists()  # nothing written


def test_missing_optuna_names_the_extra(monkeypatch, capsys):
    from loralab.tune import require_optuna

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(LoralabError, match=r"pip install 'loralab\[tune\]'"):
        require_optuna()
    from loralab.cli import main

    assert main(["tune", "report", "somewhere"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "loralab: error: hyper-parameter search needs Optuna: pip install 'loralab[tune]'"
    )

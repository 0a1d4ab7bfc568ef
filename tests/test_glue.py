"""GLUE presets (``--glue``), the selection metric (``--metric``) and the metric functions behind them."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef

import loralab
from conftest import tiny_run_config
from loralab.config import RunConfig
from loralab.config.glue import GLUE_TASKS, METRIC_DIRECTIONS
from loralab.errors import ConfigError
from loralab.evaluation.metrics import best_index, classification_metrics, is_better, mcc_from_confusion, metric_value
from loralab.runs.layout import read_metrics


def test_glue_preset_sets_dataset_columns_task_and_metric():
    c = RunConfig.from_flat({"glue": "mrpc"})
    d = c.data
    assert (d.dataset, d.dataset_config, d.text_column, d.text_pair_column, d.label_column) == (
        "nyu-mll/glue",
        "mrpc",
        "sentence1",
        "sentence2",
        "label",
    )
    assert (d.task, c.train.metric, c.metric) == ("classification", "f1", "f1")
    assert RunConfig.from_flat({"glue": "cola"}).metric == "mcc"
    stsb = RunConfig.from_flat({"glue": "stsb"})
    assert (stsb.data.task, stsb.metric) == ("regression", "pearson")
    mnli = RunConfig.from_flat({"glue": "mnli"}).data
    assert (mnli.text_column, mnli.text_pair_column) == ("premise", "hypothesis")
    assert RunConfig.from_flat({"glue": "sst2"}).data.text_pair_column is None


def test_explicit_options_win_over_the_preset_and_a_new_preset_refills():
    c = RunConfig.from_flat({"glue": "mrpc", "metric": "accuracy", "text_column": "s1", "dataset_config": "rte"})
    assert (c.metric, c.data.text_column, c.data.dataset_config, c.data.text_pair_column) == (
        "accuracy",
        "s1",
        "rte",
        "sentence2",
    )
    # a config made from a preset, then given another preset, takes the new preset's values
    stsb = RunConfig.from_flat({"glue": "mrpc"}).override({"glue": "stsb"})
    assert (stsb.data.dataset_config, stsb.data.task, stsb.metric) == ("stsb", "regression", "pearson")
    cleared = RunConfig.from_flat({"glue": "mrpc"}).override({"glue": None})
    assert (cleared.data.dataset, cleared.data.text_column, cleared.train.metric) == (None, "sentence", None)
    # the flat view written to config.json reads back into the same run
    again = RunConfig.from_flat(RunConfig.from_flat({"glue": "qqp"}).to_flat())
    assert again.to_flat() == RunConfig.from_flat({"glue": "qqp"}).to_flat()


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"glue": "squad"}, "--glue"),
        ({"glue": "stsb", "metric": "f1"}, "--metric f1 does not apply to regression"),
        ({"metric": "pearson"}, "--metric pearson does not apply to classification"),
        ({"metric": "auc"}, "--metric"),
        ({"dataset_config": "mrpc"}, "--dataset-config needs --dataset"),
        ({"dataset": "nyu-mll/glue", "train_file": "t.csv"}, "--dataset and --train-file"),
    ],
)
def test_bad_combinations_are_one_line_errors(values, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        RunConfig.from_flat(values)


def test_default_metric_follows_the_task():
    assert RunConfig().metric == "accuracy"
    assert RunConfig.from_flat({"task": "regression"}).metric == "pearson"
    assert RunConfig.from_flat({"metric": "loss"}).metric == "loss"


def test_every_preset_names_a_metric_of_its_task():
    for name in GLUE_TASKS:
        c = RunConfig.from_flat({"glue": name})
        assert c.metric in METRIC_DIRECTIONS and c.data.dataset_config == name


# ---- metric functions against scikit-learn --------------------------------------------------------
Y = np.array([0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 1, 0, 2, 0, 1])
P = np.array([0, 2, 2, 1, 1, 0, 1, 1, 2, 0, 1, 2, 0, 2, 0, 0])


@pytest.mark.parametrize("k", [2, 3])
def test_mcc_matches_scikit_learn(k):
    y, p = Y % k, P % k
    cm = confusion_matrix(y, p, labels=list(range(k)))
    assert mcc_from_confusion(cm) == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)
    logits = np.eye(k)[p]
    m = classification_metrics(y, logits)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    avg = "binary" if k == 2 else "macro"
    assert m["f1"] == pytest.approx(f1_score(y, p, average=avg))


def test_mcc_of_a_constant_prediction_is_zero_as_in_scikit_learn():
    y, p = [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]
    assert mcc_from_confusion(confusion_matrix(y, p)) == matthews_corrcoef(y, p) == 0.0


def test_metric_value_derives_mcc_for_runs_that_did_not_record_it():
    cm = [[5, 1], [2, 4]]
    assert metric_value({"confusion_matrix": cm}, "mcc") == pytest.approx(mcc_from_confusion(cm))
    assert metric_value({"accuracy": 0.5}, "accuracy") == 0.5
    assert math.isnan(metric_value({"accuracy": 0.5}, "pearson"))


# ---- the selection -----------------------------------------------------------------------------
def test_selection_follows_the_metric_and_its_direction():
    accuracy = [0.80, 0.78, 0.79]
    f1 = [0.70, 0.75, 0.74]
    loss = [0.50, 0.45, 0.48]
    assert best_index(accuracy, "accuracy") == 0
    assert best_index(f1, "f1") == 1  # another epoch than accuracy picks
    assert best_index(loss, "loss") == 1  # minimised
    assert best_index([0.5, 0.5], "accuracy") == 0  # a tie keeps the earlier epoch
    assert best_index([float("nan"), 0.1], "mcc") == 1 and best_index([float("nan")], "mcc") is None
    assert is_better("mse", 0.1, 0.2) and not is_better("pearson", 0.1, 0.2) and is_better("mcc", -0.5, None)


def test_metric_chooses_the_best_epoch_and_drives_patience(tiny_models, tiny_data, tmp_path, monkeypatch):
    from loralab.training import loop

    # accuracy peaks at epoch 1, F1 at epoch 3: a run selecting on F1 keeps epoch 3
    scripted = iter([(0.9, 0.2), (0.6, 0.3), (0.7, 0.8), (0.8, 0.5), (0.8, 0.5), (0.8, 0.5)])
    real = loop.task_metrics

    def fake(labels, logits):
        m = real(labels, logits)
        if len(labels) == 32:  # the validation split of tiny_data
            m["accuracy"], m["f1"] = next(scripted)
        return m

    monkeypatch.setattr(loop, "task_metrics", fake)
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "r", epochs=6, patience=2, metric="f1")
    result = loralab.train(cfg)
    r = result.results
    assert (r["metric"], r["best_epoch"], r["epochs"]) == ("f1", 3, 5)
    assert "no better validation f1" in r["stopped"]["reason"]
    epochs = [row for row in read_metrics(result.run_dir / "metrics.csv") if row["kind"] == "epoch"]
    assert [row["val_metric"] for row in epochs] == [0.2, 0.3, 0.8, 0.5, 0.5]


def test_a_study_picks_its_best_cell_on_the_runs_metric():
    from types import SimpleNamespace

    from loralab.evaluation.stats import t_interval
    from loralab.study.report.numbers import best_cell

    def cell(name, accuracy, loss, mcc):
        values = {"accuracy": accuracy, "loss": loss, "mcc": mcc}
        return SimpleNamespace(
            name=name, n=3, metrics={("validation", k): t_interval([v] * 3) for k, v in values.items()}
        )

    cells = {"a": cell("a", 0.90, 0.50, 0.30), "b": cell("b", 0.80, 0.30, 0.60), "c": cell("c", 0.85, 0.40, 0.10)}
    assert best_cell(cells) == "a"  # accuracy by default
    assert best_cell(cells, "loss") == "b" and best_cell(cells, "mcc") == "b"

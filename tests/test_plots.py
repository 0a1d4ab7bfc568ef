"""Every kind of figure (loralab.plots) is drawn without touching the process's matplotlib state:
the backend a caller chose (here ``pdf``, as a notebook's would be ``inline``) is the backend
after drawing, and Optuna's style sheet does not leak into the caller's rcParams."""

from __future__ import annotations

import logging

import matplotlib
import numpy as np
import pytest

from loralab.evaluation import analysis
from loralab.plots import plot_confusion, plot_curves
from loralab.plots.analysis import reliability_png
from loralab.plots.output import pyplot_scope
from loralab.plots.study import Point, against_png, confusions_png, cost_png, curves_png

PNG = b"\x89PNG"


@pytest.fixture
def caller_backend():
    """The caller's backend is ``pdf`` for the test, and what it was before afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield "pdf"
    matplotlib.use(before)


def test_run_figures_leave_the_backend_alone(caller_backend, tmp_path):
    history = [{"kind": "step", "step": s, "train_loss": 1.0 / s} for s in range(1, 5)]
    history += [{"kind": "epoch", "step": 4, "epoch": 1, "val_loss": 0.5, "val_accuracy": 0.8}]
    plot_curves(history, tmp_path, "run")
    plot_confusion([[3, 1], [0, 4]], ["neg", "pos"], tmp_path / "confusion_matrix.png", "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png", "curves.pdf", "curves.png"]
    assert matplotlib.get_backend() == caller_backend


def test_analysis_figure_leaves_the_backend_alone(caller_backend):
    rows = [{"text": f"w{i} not", "label": i % 2, "prediction": 1, "confidence": 0.5 + i / 20} for i in range(8)]
    assert reliability_png(analysis.analyze(rows), "run · test").startswith(PNG)
    assert matplotlib.get_backend() == caller_backend


def test_study_figures_leave_the_backend_alone(caller_backend):
    a, b = Point(1_000, 0.80, 0.78, 0.82), Point(100_000, 0.85, 0.85, 0.85)
    pngs = [
        cost_png("s", "test", [("head", a), ("lora", b)], [a, b], "validation"),
        cost_png("s", "test", [("head", a), ("lora", b)], [a], "validation", "seconds per epoch"),
        against_png(
            "s",
            "test",
            "LoRA rank",
            {"all": [Point(4, 0.8, 0.79, 0.81), Point(8, 0.82, 0.8, 0.84)], "empty": []},
            log_base=2,
        ),
        curves_png("s", {"lora": ([[(1, 0.7), (2, 0.8)], [(1, 0.72), (2, 0.79)]], [(1, 0.71), (2, 0.795)])}),
        confusions_png(
            "s", "test", {"lora": (np.array([[3, 1], [0, 4]]), 2), "head": (np.eye(2, dtype=int), 1)}, ["neg", "pos"]
        ),
    ]
    assert all(png.startswith(PNG) for png in pngs)
    assert matplotlib.get_backend() == caller_backend


def test_search_figures_leave_the_backend_and_the_style_alone(caller_backend):
    optuna = pytest.importorskip("optuna", reason="needs the tune extra: pip install 'loralab[tune]'")
    from loralab.plots.search import search_views

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: (t.suggest_float("lr", 1e-5, 1e-3, log=True) * 1e3 - 0.3) ** 2 + t.suggest_int("rank", 1, 8),
        n_trials=8,
    )
    facecolor = matplotlib.rcParams["axes.facecolor"]
    import matplotlib.pyplot as plt

    mine = plt.figure()  # a caller's open pyplot figure stays open
    try:
        views = search_views(study, pruned=True)
        assert {"history.png", "slice.png"} <= set(views)
        assert all(png.startswith(PNG) for png, _ in views.values())
        assert plt.get_fignums() == [mine.number]
    finally:
        plt.close(mine)
    assert matplotlib.get_backend() == caller_backend
    assert matplotlib.rcParams["axes.facecolor"] == facecolor  # Optuna's ggplot style was undone


def test_pyplot_scope_quiets_the_categorical_axis_info_and_restores_the_level():
    log = logging.getLogger("matplotlib.category")
    before = log.level
    log.setLevel(logging.INFO)
    try:
        with pyplot_scope():
            assert log.getEffectiveLevel() == logging.WARNING
        assert log.level == logging.INFO
    finally:
        log.setLevel(before)

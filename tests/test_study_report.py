"""Aggregation, comparisons, findings and report files, on study folders made by hand.

The run directories here are written directly (results.json, config.json, predictions,
metrics.csv) with chosen correctness per example, so that every number of the report can be
checked against a hand computation without training anything.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from loralab.artifacts import METRICS_COLUMNS, PREDICTION_COLUMNS, atomic_write_csv
from loralab.study.aggregate import load_study, summarize
from loralab.study.folder import StudyFolder
from loralab.study.report import build, collect, one_option_pairs
from loralab.study.spec import StudySpec, make_plan

N = 40
LABELS = [i % 2 for i in range(N)]
TEXTS = [f"sentence number {i} is {'not ' if i % 5 == 0 else ''}fine " for i in range(N)]


def correctness(n_right: int, offset: int = 0) -> np.ndarray:
    """``n_right`` of the N examples right: a contiguous block starting at ``offset`` (cyclic)."""
    c = np.zeros(N, dtype=bool)
    c[[(offset + i) % N for i in range(n_right)]] = True
    return c


def write_run(run_dir: Path, config, correct: np.ndarray, trainable: int, seconds: float, epochs_acc: list[float]):
    run_dir.mkdir(parents=True)
    preds = [y if ok else 1 - y for y, ok in zip(LABELS, correct, strict=True)]
    rows = [{"text": t, "label": y, "prediction": p, "confidence": "0.900000" if ok else "0.700000"}
            for t, y, p, ok in zip(TEXTS, LABELS, preds, correct, strict=True)]
    cm = [[sum(1 for y, p in zip(LABELS, preds, strict=True) if y == i and p == j) for j in (0, 1)] for i in (0, 1)]
    acc = float(correct.mean())
    split_metrics = {"accuracy": acc, "f1": acc, "loss": 1 - acc, "confusion_matrix": cm, "examples": N}
    results = {
        "validation": split_metrics, "test": split_metrics,
        "params": {"trainable": trainable, "total": 1_000_000, "trainable_percent": trainable / 1e4},
        "timing": {"seconds_per_epoch": seconds}, "memory": {"peak_bytes": 512 * 2**20},
        "data": {"train_examples": config.data.train_size or 1000},
    }
    (run_dir / "config.json").write_text(json.dumps({"config": config.to_dict(), "label_names": ["neg", "pos"]}))
    atomic_write_csv(run_dir / "predictions_test.csv", PREDICTION_COLUMNS, rows)
    atomic_write_csv(run_dir / "predictions_validation.csv", PREDICTION_COLUMNS, rows)
    atomic_write_csv(run_dir / "metrics.csv", METRICS_COLUMNS,
                     [{"step": e, "epoch": e, "kind": "epoch", "val_accuracy": a} for e, a in enumerate(epochs_acc, 1)])
    (run_dir / "results.json").write_text(json.dumps(results))


def fake_study(root: Path, spec: StudySpec, right: dict[tuple[str, int], tuple[int, int] | np.ndarray],
               trainable: dict[str, int], missing: tuple = ()) -> Path:
    """Write study.json for ``spec`` and a run per (cell, seed): ``right[(cell, seed)]`` is
    ``(n, offset)`` (see :func:`correctness`) or the correctness array itself."""
    plan = make_plan(spec, root)
    StudyFolder(plan.root).write_study(plan.to_json())
    for run in plan.runs:
        if (run.cell, run.seed) in missing:
            continue
        given = right[(run.cell, run.seed)]
        correct = given if isinstance(given, np.ndarray) else correctness(*given)
        write_run(Path(run.config.train.output_dir), run.config, correct, trainable[run.cell],
                  1.0 + trainable[run.cell] / 1000, [0.5, float(correct.mean())])
    return plan.root


@pytest.fixture()
def one_seed_study(tmp_path) -> Path:
    # base right on 20 (examples 0-19); better right on 28: examples 2-29 -> b = 10 (20-29), c = 2 (0, 1)
    spec = StudySpec(name="one", cells=[{"name": "base", "method": "head"}, {"name": "better", "method": "lora"}],
                     seeds=[1], baseline="base", base={"model": "fake-model"})
    return fake_study(tmp_path / "one", spec, {("base", 1): (20, 0), ("better", 1): (28, 2)},
                      {"base": 100, "better": 5000})


@pytest.fixture()
def rank_study(tmp_path) -> Path:
    spec = StudySpec(name="ranks", base={"model": "fake-model", "method": "lora"}, grid={"rank": [4, 8, 16]},
                     cells=[], seeds=[1, 2, 3], baseline="rank=4")
    right = {}
    for rank, counts in {4: (20, 22, 24), 8: (30, 31, 32), 16: (31, 31, 32)}.items():
        for seed, n in zip((1, 2, 3), counts, strict=True):
            right[(f"rank={rank}", seed)] = (n, seed)
    return fake_study(tmp_path / "ranks", spec, right, {"rank=4": 4000, "rank=8": 8000, "rank=16": 16000},
                      missing=(("rank=16", 3),))


def test_cell_summary_matches_hand_computation(rank_study):
    study = load_study(rank_study)
    s = summarize(study.cell("rank=4"))
    iv = s.metrics[("test", "accuracy")]
    # 20/40, 22/40, 24/40 = 0.50, 0.55, 0.60: mean 0.55, sd 0.05, t(0.975, 2) * 0.05 / sqrt(3) = 0.124206
    assert (iv.n, iv.mean, iv.std) == (3, pytest.approx(0.55), pytest.approx(0.05))
    assert (iv.low, iv.high) == (pytest.approx(0.425794, abs=1e-6), pytest.approx(0.674206, abs=1e-6))
    assert s.metrics[("test", "loss")].mean == pytest.approx(0.45)
    assert (s.trainable, s.seeds, s.n_planned) == (4000, [1, 2, 3], 3)
    assert s.seconds_per_epoch.mean == pytest.approx(5.0) and s.peak_memory_mb.mean == pytest.approx(512)
    s16 = summarize(study.cell("rank=16"))
    assert s16.seeds == [1, 2] and s16.metrics[("test", "accuracy")].mean == pytest.approx(0.775)
    assert [r.status for r in study.cell("rank=16").runs] == ["done", "done", "missing"]


def test_numeric_options_pair_only_neighbours(rank_study):
    study = load_study(rank_study)
    pairs = [(a.name, b.name, o) for a, b, o in one_option_pairs(study.cells)]
    assert pairs == [("rank=8", "rank=4", "rank"), ("rank=16", "rank=8", "rank")]


def test_one_seed_comparison_is_exact_mcnemar_and_reaches_the_findings(one_seed_study):
    r = collect(load_study(one_seed_study))
    (pr,) = r.vs_baseline
    c = pr.comparison
    assert (c.diff, c.b, c.c) == (pytest.approx(0.2), 10, 2)
    assert c.p == pytest.approx(158 / 4096)
    assert r.best == "better"
    paths = build(one_seed_study)
    findings = json.loads(paths["report.json"].read_text())["findings"]
    line = next(f for f in findings if f.startswith("better"))
    assert line.startswith("better is better than the baseline base: +20.0 pt, 95% CI [+")
    assert "p = 0.039" in line
    assert any("Best test accuracy: **better**, 70.0% (1 seed)" in f for f in findings)
    assert any("One seed per cell" in f for f in findings)


def test_report_files_contain_the_runs_numbers(rank_study):
    paths = build(rank_study)
    md = paths["report.md"].read_text()
    html = paths["report.html"].read_text()
    for name in ("report.md", "report.html", "summary.csv", "report.json"):
        assert paths[name].is_file()
    assert "| rank=4 | 3/3 | 55.0% ± 5.0 [42.6, 67.4] |" in md
    assert "| rank=16 | 2/3 |" in md
    assert "1 of 9 runs are not finished" in md
    assert "rank 16 is not significantly better than rank 8" in md
    assert "rank=8 is better than the baseline rank=4" in md
    for plot in ("accuracy_vs_params", "accuracy_vs_rank", "training_curves", "confusion_matrices",
                 "reliability_best"):
        assert f"](plots/{plot}.png)" in md
        assert (rank_study / "plots" / f"{plot}.png").stat().st_size > 1000
    assert "learning_curve" not in md  # train_size does not vary
    assert html.count('src="data:image/png;base64,') == 5 and 'src="plots/' not in html
    assert "55.0% ± 5.0 [42.6, 67.4]" in html
    with open(paths["summary.csv"], newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert float(rows["rank=4"]["test_accuracy_mean"]) == pytest.approx(0.55)
    assert float(rows["rank=4"]["test_accuracy_ci_low"]) == pytest.approx(0.4257935, abs=1e-6)
    assert rows["rank=4"]["delta_vs_baseline_test_pt"] == ""  # the baseline itself
    delta = float(rows["rank=8"]["delta_vs_baseline_test_pt"])
    assert delta == pytest.approx(100 * (31 / 40 - 22 / 40))
    assert rows["rank=16"]["seeds_done"] == "2"


def test_report_of_a_folder_without_study_json_is_a_one_line_error(tmp_path):
    from loralab.cli import main as cli_main

    assert cli_main(["study", "report", str(tmp_path)]) == 2


def test_a_cell_that_predicts_one_label_is_called_out(tmp_path):
    always_pos = np.array(LABELS) == 1  # right exactly on the positive examples
    spec = StudySpec(name="const", cells=[{"name": "head", "method": "head"}, {"name": "lora", "method": "lora"}],
                     seeds=[1], base={"model": "fake-model"})
    root = fake_study(tmp_path / "const", spec, {("head", 1): always_pos, ("lora", 1): (30, 0)},
                      {"head": 10, "lora": 100})
    findings = json.loads(build(root)["report.json"].read_text())["findings"]
    assert "head predicts 'pos' for 100.0% of the test examples (seeds pooled)" in " ".join(findings)
    assert not any(f.startswith("lora predicts") for f in findings)


def test_a_study_whose_runs_mix_software_versions_says_so(rank_study):
    study = load_study(rank_study)
    assert collect(study).notes == []  # all runs alike (here: no versions recorded at all)
    runs = [r for r in study.runs if r.run is not None]
    for i, r in enumerate(runs):
        path = r.run.run_dir / "config.json"
        meta = json.loads(path.read_text())
        meta["versions"] = {"loralab": "0.1.0" if i < 3 else "0.2.0", "torch": "2.13.0"}
        path.write_text(json.dumps(meta))
    notes = json.loads(build(rank_study)["report.json"].read_text())["notes"]
    assert len(notes) == 1 and "loralab 0.1.0 (3 runs), 0.2.0 (5 runs)" in notes[0]
    assert "torch" not in notes[0]  # the same torch everywhere
    assert "Note: the runs were not all made with the same software" in (rank_study / "report.md").read_text()

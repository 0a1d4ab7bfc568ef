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

from loralab.evaluation.comparison import compare
from loralab.evaluation.stats import t_test_mde
from loralab.experiments.folder import StudyFolder
from loralab.files import atomic_write_csv
from loralab.runs.layout import METRICS_COLUMNS, PREDICTION_COLUMNS
from loralab.study.aggregate import load_study, summarize
from loralab.study.plan import make_plan
from loralab.study.report import build, collect, one_option_pairs, pareto_front
from loralab.study.spec import StudySpec

N = 40
LABELS = [i % 2 for i in range(N)]
TEXTS = [f"sentence number {i} is {'not ' if i % 5 == 0 else ''}fine " for i in range(N)]


def correctness(n_right: int, offset: int = 0) -> np.ndarray:
    """``n_right`` of the N examples right: a contiguous block starting at ``offset`` (cyclic)."""
    c = np.zeros(N, dtype=bool)
    c[[(offset + i) % N for i in range(n_right)]] = True
    return c


def _split_files(correct: np.ndarray) -> tuple[list[dict], dict]:
    preds = [y if ok else 1 - y for y, ok in zip(LABELS, correct, strict=True)]
    rows = [
        {"text": t, "label": y, "prediction": p, "confidence": "0.900000" if ok else "0.700000"}
        for t, y, p, ok in zip(TEXTS, LABELS, preds, correct, strict=True)
    ]
    cm = [[sum(1 for y, p in zip(LABELS, preds, strict=True) if y == i and p == j) for j in (0, 1)] for i in (0, 1)]
    acc = float(correct.mean())
    return rows, {"accuracy": acc, "f1": acc, "loss": 1 - acc, "confusion_matrix": cm, "examples": N}


def write_run(
    run_dir: Path,
    config,
    correct: np.ndarray,
    trainable: int,
    seconds: float,
    epochs_acc: list[float],
    val_correct: np.ndarray | None = None,
):
    """A finished run, right on ``correct`` on test and on ``val_correct`` (default: the same) on validation."""
    run_dir.mkdir(parents=True)
    rows, split_metrics = _split_files(correct)
    val_rows, val_metrics = _split_files(correct if val_correct is None else val_correct)
    results = {
        "validation": val_metrics,
        "test": split_metrics,
        "params": {"trainable": trainable, "total": 1_000_000, "trainable_percent": trainable / 1e4},
        "timing": {
            "seconds_per_epoch": seconds,
            "train_seconds": seconds * len(epochs_acc),
            "total_seconds": seconds * len(epochs_acc) + 10,
        },
        "memory": {"peak_bytes": 512 * 2**20},
        "data": {"train_examples": config.data.train_size or 1000},
    }
    (run_dir / "config.json").write_text(json.dumps({"config": config.to_dict(), "label_names": ["neg", "pos"]}))
    atomic_write_csv(run_dir / "predictions_test.csv", PREDICTION_COLUMNS, rows)
    atomic_write_csv(run_dir / "predictions_validation.csv", PREDICTION_COLUMNS, val_rows)
    atomic_write_csv(
        run_dir / "metrics.csv",
        METRICS_COLUMNS,
        [{"step": e, "epoch": e, "kind": "epoch", "val_accuracy": a} for e, a in enumerate(epochs_acc, 1)],
    )
    (run_dir / "results.json").write_text(json.dumps(results))


def fake_study(
    root: Path,
    spec: StudySpec,
    right: dict[tuple[str, int], tuple[int, int] | np.ndarray],
    trainable: dict[str, int],
    missing: tuple = (),
    val_right: dict[tuple[str, int], tuple[int, int]] | None = None,
) -> Path:
    """Write study.json for ``spec`` and a run per (cell, seed): ``right[(cell, seed)]`` is
    ``(n, offset)`` (see :func:`correctness`) or the correctness array itself; ``val_right``
    gives validation its own correctness (default: the same as test)."""
    plan = make_plan(spec, root)
    StudyFolder(plan.root).write_study(plan.to_json())
    for run in plan.runs:
        if (run.cell, run.seed) in missing:
            continue
        given = right[(run.cell, run.seed)]
        correct = given if isinstance(given, np.ndarray) else correctness(*given)
        val = correctness(*val_right[(run.cell, run.seed)]) if val_right else None
        write_run(
            Path(run.config.train.output_dir),
            run.config,
            correct,
            trainable[run.cell],
            1.0 + trainable[run.cell] / 1000,
            [0.5, float(correct.mean())],
            val,
        )
    return plan.root


def two_cell_study(root: Path, right: dict, other: str = "better", missing: tuple = ()) -> Path:
    """Cells ``base`` (head, the baseline) and ``other`` (lora), one seed, written by :func:`fake_study`."""
    spec = StudySpec(
        name=root.name,
        cells=[{"name": "base", "method": "head"}, {"name": other, "method": "lora"}],
        seeds=[1],
        baseline="base",
        base={"model": "fake-model"},
    )
    return fake_study(root, spec, right, {"base": 100, other: 5000}, missing=missing)


@pytest.fixture()
def one_seed_study(tmp_path) -> Path:
    # base right on 20 (examples 0-19); better right on 28: examples 2-29 -> b = 10 (20-29), c = 2 (0, 1)
    return two_cell_study(tmp_path / "one", {("base", 1): (20, 0), ("better", 1): (28, 2)})


@pytest.fixture()
def rank_study(tmp_path) -> Path:
    spec = StudySpec(
        name="ranks",
        base={"model": "fake-model", "method": "lora"},
        grid={"rank": [4, 8, 16]},
        cells=[],
        seeds=[1, 2, 3],
        baseline="rank=4",
    )
    right = {}
    for rank, counts in {4: (20, 22, 24), 8: (30, 31, 32), 16: (31, 31, 32)}.items():
        for seed, n in zip((1, 2, 3), counts, strict=True):
            right[(f"rank={rank}", seed)] = (n, seed)
    return fake_study(
        tmp_path / "ranks", spec, right, {"rank=4": 4000, "rank=8": 8000, "rank=16": 16000}, missing=(("rank=16", 3),)
    )


def test_pareto_front_follows_the_cost_it_is_given(rank_study):
    """By parameters or by seconds (here both grow with the rank), rank 16 ties rank 8's accuracy at a
    higher cost and is off the front; with the cost reversed only the cheapest best cell stays."""
    summaries = list(collect(load_study(rank_study)).summaries.values())
    seconds = [s.seconds_per_epoch.mean for s in summaries]
    assert seconds == [pytest.approx(5.0), pytest.approx(9.0), pytest.approx(17.0)]

    def names(front):
        return [s.name for s in front]

    assert names(pareto_front(summaries, "validation")) == ["rank=4", "rank=8"]
    assert names(pareto_front(summaries, "validation", lambda s: s.seconds_per_epoch.mean)) == ["rank=4", "rank=8"]
    assert names(pareto_front(summaries, "validation", lambda s: -s.seconds_per_epoch.mean)) == ["rank=16"]


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
    assert c.models.p == pytest.approx(158 / 4096)  # these two runs: the exact McNemar test
    assert not c.tested  # the methods: one run each has no seed spread to test against
    assert r.best == "better"
    paths = build(one_seed_study)
    findings = json.loads(paths["report.json"].read_text())["findings"]
    line = next(f for f in findings if f.startswith("better"))
    assert line.startswith("better − the baseline base: +20.0 pt, not tested as a difference between the methods")
    assert "these two trained runs alone, over the 40 examples: 95% CI [+" in line
    assert "p = 0.039" in line
    md = paths["report.md"].read_text()
    assert "| better | 70.0% | 50.0% | +20.00 | – | – | – | – | 1 | – |" in md  # the methods: nothing to test
    assert any(
        "Best cell (chosen on validation accuracy): **better**, 70.0% (1 seed); its test accuracy: 70.0% (1 seed)" in f
        for f in findings
    )
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
    assert "| rank 16 vs rank 8 |" in md and "(cells rank=16 vs rank=8)" not in md  # grid names say it once
    assert "rank=8 is better than the baseline rank=4" in md
    plots = ("accuracy_vs_params", "accuracy_vs_time", "accuracy_vs_rank", "training_curves", "confusion_matrices")
    for plot in (*plots, "reliability_best"):
        assert f"](plots/{plot}.png)" in md
        assert (rank_study / "plots" / f"{plot}.png").stat().st_size > 1000
    assert "learning_curve" not in md  # train_size does not vary
    assert html.count('src="data:image/png;base64,') == 6 and 'src="plots/' not in html
    assert "55.0% ± 5.0 [42.6, 67.4]" in html
    with open(paths["summary.csv"], newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert float(rows["rank=4"]["test_accuracy_mean"]) == pytest.approx(0.55)
    assert float(rows["rank=4"]["test_accuracy_ci_low"]) == pytest.approx(0.4257935, abs=1e-6)
    assert rows["rank=4"]["delta_vs_baseline_test_pt"] == ""  # the baseline itself
    delta = float(rows["rank=8"]["delta_vs_baseline_test_pt"])
    assert delta == pytest.approx(100 * (31 / 40 - 22 / 40))
    assert rows["rank=16"]["seeds_done"] == "2"


def test_the_report_states_the_runs_time_and_the_tuning_section_the_seeds_cost(one_seed_study):
    # per run: seconds 1 + trainable / 1000, 2 epochs -> base 1.1 s/epoch, better 6.0 s/epoch
    (one_seed_study / "tuning.json").write_text(
        json.dumps({"better": {"params": {"lr": 0.001}, "trials": 2, "search_seconds": 100.0}})
    )
    paths = build(one_seed_study)
    md = paths["report.md"].read_text()
    # total_seconds = 2 * s/epoch + 10: (2.2 + 10) + (12.0 + 10) = 34.2 s
    assert json.loads(paths["report.json"].read_text())["run_seconds"] == pytest.approx(34.2)
    assert "· 0.01 h of run time (the finished runs' own clocks, summed) ·" in md
    # train_seconds = 2.2 + 12.0 = 14.2 -> "14" (it read 0 when taken from the wrong key)
    assert "100 training seconds in all, against 14 for the study's runs." in md


def test_the_report_says_which_machines_the_runs_ran_on(rank_study):
    # one run records its machine (as runtime.library_versions does), the others predate that
    run_dir = next(p for p in (rank_study / "runs").iterdir() if p.name.startswith("rank-4-seed1"))
    meta = json.loads((run_dir / "config.json").read_text())
    meta["versions"] = {"cpu": "Test CPU 9000", "cpu_count": "2", "torch_threads": "2", "device": "cpu"}
    meta["precision"] = "bf16"  # what --precision auto resolved to on that machine
    (run_dir / "config.json").write_text(json.dumps(meta))
    paths = build(rank_study)
    line = "Machines: unrecorded (7 runs); Test CPU 9000, 2 CPUs, 2 torch threads, bf16 (1 run)."
    assert line in paths["report.md"].read_text()
    assert json.loads(paths["report.json"].read_text())["machines"] == line.removeprefix("Machines: ")[:-1]
    # a run written before config.json recorded the resolved precision: the one it asked for, unless auto
    del meta["precision"]
    for asked, shown in (("fp32", ", fp32"), ("auto", "")):
        meta["config"]["train"]["precision"] = asked
        (run_dir / "config.json").write_text(json.dumps(meta))
        assert f"Test CPU 9000, 2 CPUs, 2 torch threads{shown} (1 run)." in build(rank_study)["report.md"].read_text()


def test_report_of_a_folder_without_study_json_is_a_one_line_error(tmp_path):
    from loralab.cli import main as cli_main

    assert cli_main(["study", "report", str(tmp_path)]) == 2


def test_a_cell_that_predicts_one_label_is_called_out(tmp_path):
    always_pos = np.array(LABELS) == 1  # right exactly on the positive examples
    spec = StudySpec(
        name="const",
        cells=[{"name": "head", "method": "head"}, {"name": "lora", "method": "lora"}],
        seeds=[1],
        base={"model": "fake-model"},
    )
    root = fake_study(
        tmp_path / "const", spec, {("head", 1): always_pos, ("lora", 1): (30, 0)}, {"head": 10, "lora": 100}
    )
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


def test_the_best_cell_is_chosen_on_validation_not_on_test(tmp_path):
    """`a` is best on validation (30 vs 24 right), `b` on test (32 vs 26): the report names `a`
    as best, analyses `a`'s run, and reports its test accuracy without choosing on it."""
    spec = StudySpec(
        name="choice",
        cells=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}, {"name": "base", "method": "head"}],
        seeds=[1],
        baseline="base",
        base={"model": "fake-model"},
    )
    root = fake_study(
        tmp_path / "choice",
        spec,
        {("a", 1): (26, 0), ("b", 1): (32, 0), ("base", 1): (20, 0)},
        {"a": 100, "b": 100_000, "base": 10},
        val_right={("a", 1): (30, 0), ("b", 1): (24, 0), ("base", 1): (20, 0)},
    )
    r = collect(load_study(root))
    assert r.split == "test" and r.best == "a"
    report = json.loads(build(root)["report.json"].read_text())
    assert (report["best"], report["best_chosen_on"]) == ("a", "validation")
    assert report["error_analysis"]["run"].startswith("a-seed1-")
    best_line = next(f for f in report["findings"] if f.startswith("Best cell"))
    assert best_line == (
        "Best cell (chosen on validation accuracy): **a**, 75.0% (1 seed); its test accuracy: 65.0% (1 seed)."
    )
    # the Pareto front and the "cheapest near the best" choice are made on validation too
    assert "Pareto front (validation accuracy vs trainable parameters): base (10), a (100)." in report["findings"]


def test_findings_follow_the_holm_adjusted_p_and_say_so(tmp_path):
    """Two cells each beat the baseline by the same runs (3 seeds): the methods' p is about 0.031,
    significant alone, not after Holm over the family of 2 (adjusted p = 2p). The per-example test
    of the runs says p = 0.005: these runs differ more clearly than the methods do."""
    spec = StudySpec(
        name="holm",
        cells=[{"name": "base", "method": "head"}, {"name": "x", "method": "lora"}, {"name": "y", "method": "full"}],
        seeds=[1, 2, 3],
        baseline="base",
        base={"model": "fake-model"},
    )
    base = {1: (20, 0), 2: (22, 1), 3: (24, 2)}
    better = {1: (25, 1), 2: (29, 2), 3: (30, 3)}
    right = {(cell, s): (base if cell == "base" else better)[s] for cell in ("base", "x", "y") for s in (1, 2, 3)}
    root = fake_study(tmp_path / "holm", spec, right, {"base": 10, "x": 100, "y": 1000})
    expected = compare({s: correctness(*better[s]) for s in base}, {s: correctness(*base[s]) for s in base})
    p = expected.p
    assert 0.025 < p < 0.05 and expected.models.p < 0.01
    report = json.loads(build(root)["report.json"].read_text())
    for cell in ("x", "y"):
        c = report["against_baseline"][cell]
        assert (c["p"], c["p_holm"]) == (pytest.approx(p), pytest.approx(2 * p))
        assert c["these_models"]["p"] == pytest.approx(expected.models.p)
    assert report["family"] == {
        "comparisons": 2,
        "tests": 2,
        "adjustment": "holm",
        "alpha": 0.05,
        "mde_alpha": 0.025,
        "mde_level": "bonferroni",
        "these_models_tests": 2,
    }
    line = next(f for f in report["findings"] if f.startswith("x "))
    assert line.startswith("x is not significantly better than the baseline base: +15.0 pt")
    assert "p = 0.031, Holm-adjusted p = 0.063 (p < 0.05 before the Holm adjustment for the report's 2 tests)" in line
    assert any("Holm-adjusted, and the wording follows the adjusted one" in f for f in report["findings"])
    with open(root / "summary.csv", newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert float(rows["x"]["p_holm"]) == pytest.approx(2 * p, abs=1e-6)
    assert float(rows["x"]["models_p_sign_flip"]) == pytest.approx(expected.models.p, abs=1e-6)
    assert "| x | 70.0% | 55.0% | +15.00 |" in (root / "report.md").read_text()


def test_each_comparison_states_its_minimum_detectable_effect(rank_study):
    """The MDE of the methods' t-test (its standard error and degrees of freedom), at the
    Bonferroni level of the report's 3 tests: 0.05 / 3."""
    report = json.loads(build(rank_study)["report.json"].read_text())
    c = report["against_baseline"]["rank=8"]
    assert c["mde_alpha"] == pytest.approx(0.05 / 3)
    assert c["mde"] == pytest.approx(t_test_mde(c["se"], c["df"], 0.05 / 3))
    assert c["mde"] > t_test_mde(c["se"], c["df"])  # stricter than at the unadjusted 5 %
    line = next(f for f in report["findings"] if f.startswith("rank=8"))
    assert (
        f"with 3 seeds per cell and 40 examples it had 80% power to detect a difference of ±{100 * c['mde']:.1f} pt "
        "at α = 0.05/3" in line
    )
    assert f"| ±{100 * c['mde']:.2f} |" in (rank_study / "report.md").read_text()


def test_a_cell_with_fewer_seeds_is_compared_on_the_paired_seeds(rank_study):
    report = json.loads(build(rank_study)["report.json"].read_text())
    c = report["against_baseline"]["rank=16"]  # rank=16 finished seeds 1, 2; the baseline 1, 2, 3
    assert c["paired_runs"] == ["1", "2"] and (c["seeds_a"], c["seeds_b"]) == (2, 3)
    assert c["accuracy_b"] == pytest.approx((20 + 22) / 80)  # the baseline's seeds 1 and 2 only
    assert "(compared on the 2 paired seeds only)" in next(f for f in report["findings"] if f.startswith("rank=16"))


def test_a_report_with_only_the_baseline_finished_says_there_is_no_comparison_yet(tmp_path):
    root = two_cell_study(tmp_path / "early", {("base", 1): (20, 0)}, other="other", missing=(("other", 1),))
    md = build(root)["report.md"].read_text()
    assert "No comparison yet: the baseline, or every other cell, has no finished run." in md
    assert "over all 0 comparisons" not in md


def test_a_pair_of_named_cells_keeps_the_cell_names_beside_the_option_labels():
    from loralab.study.report import PairResult

    grid = PairResult("rank=16", "rank=8", "rank 16", "rank 8", "rank", comparison=None)
    named = PairResult("lora-r16", "lora-r8", "rank 16", "rank 8", "rank", comparison=None)
    assert grid.cells_note == "" and named.cells_note == " (cells lora-r16 vs lora-r8)"


def test_a_regression_study_reports_its_metric_and_tests_it_against_the_baseline(tiny_models, tmp_path):
    """Real tiny runs: no accuracy anywhere, Pearson per cell, and the methods' test on Pearson."""
    from loralab.evaluation.metric_test import metric_comparison
    from loralab.study.runner import run_study
    from loralab.study.spec import load_spec
    from test_tasks import write_regression_dir

    data = write_regression_dir(tmp_path / "data", n=48)
    spec_file = tmp_path / "reg.yaml"
    spec_file.write_text(
        "name: reg\n"
        f"base: {{model: {tiny_models['bert']}, data_dir: {data}, epochs: 1, batch_size: 8, rank: 4, alpha: 8, "
        "max_length: 48, device: cpu, label_column: score, task: regression, lr: 0.01}\n"
        "cells:\n  - {name: full, method: full}\n  - {name: lora, method: lora}\n"
        "seeds: [1, 2]\nbaseline: full\n"
    )
    plan = make_plan(load_spec(spec_file), tmp_path / "out")
    run_study(plan, jobs=1, threads=1, echo=lambda _: None)
    build(plan.root)
    report = (plan.root / "report.md").read_text()
    assert "validation pearson" in report and "No finished run yet" not in report
    assert "No comparison yet" not in report and "| cell | pearson (cell vs baseline) |" in report
    got = json.loads((plan.root / "report.json").read_text())["metric_against_baseline"]["lora"]
    study = load_study(plan.root)
    runs = {c.name: sorted(c.done, key=lambda r: r.seed) for c in study.cells}
    split = study.split
    labels = [p["label"] for p in runs["full"][0].run.predictions(split)]
    want = metric_comparison(
        "pearson",
        labels,
        [[p["prediction"] for p in r.run.predictions(split)] for r in runs["lora"]],
        [[p["prediction"] for p in r.run.predictions(split)] for r in runs["full"]],
    )
    assert got["diff"] == pytest.approx(want.diff) and got["p"] == pytest.approx(want.p)
    assert got["runs_a"] == pytest.approx([r.run.results[split]["pearson"] for r in runs["lora"]], abs=1e-6)
    assert f"lora vs the baseline full on {split} pearson" in report

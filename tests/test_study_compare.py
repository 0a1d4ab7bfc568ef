"""``loralab study compare A B``: a cell of one study folder (or a search's final seeds) against a
cell of another, with the numbers checked against the statistics module on the same arrays."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from loralab.cli import main
from loralab.evaluation.comparison import compare
from loralab.experiments.folder import StudyError
from loralab.study.compare import compare_sides, markdown, resolve
from loralab.study.spec import StudySpec
from test_study_report import correctness, fake_study

# A: test right on 30, 32 of 40 (seeds 1, 2); validation on 26, 28. B: test 24, 25; validation 27, 27.
A_TEST = {1: (30, 0), 2: (32, 3)}
A_VAL = {1: (26, 1), 2: (28, 2)}
B_TEST = {1: (24, 5), 2: (25, 0)}
B_VAL = {1: (27, 0), 2: (27, 4)}


def one_cell(root: Path, name: str, cell: str, method: str, test: dict, val: dict, seeds=(1, 2)) -> Path:
    spec = StudySpec(
        name=name, cells=[{"name": cell, "method": method}], seeds=list(seeds), baseline=cell, base={"model": "fake"}
    )
    return fake_study(
        root,
        spec,
        {(cell, s): test[s] for s in seeds},
        {cell: 1000 if method == "lora" else 20000},
        val_right={(cell, s): val[s] for s in seeds},
    )


@pytest.fixture()
def folders(tmp_path) -> tuple[Path, Path]:
    a = one_cell(tmp_path / "lora-search" / "final", "lora-final", "tuned", "lora", A_TEST, A_VAL)
    b = one_cell(tmp_path / "full-final", "full-final", "tuned", "full", B_TEST, B_VAL)
    return a.parent, b  # A as a search folder (its final/), B as a study folder


def test_numbers_are_the_stats_modules_on_the_same_arrays(folders):
    a, b = resolve(str(folders[0])), resolve(str(folders[1]))
    assert (a.label, b.label) == ("lora-final:tuned", "full-final:tuned")
    r = compare_sides(a, b)
    expected = {}
    for split, (ta, tb) in {"validation": (A_VAL, B_VAL), "test": (A_TEST, B_TEST)}.items():
        expected[split] = compare({s: correctness(*ta[s]) for s in (1, 2)}, {s: correctness(*tb[s]) for s in (1, 2)})
    assert list(r.comparisons) == ["validation", "test"]
    for split, c in r.comparisons.items():
        e = expected[split]
        assert (c.diff, c.ci_low, c.ci_high, c.p, c.mde) == (e.diff, e.ci_low, e.ci_high, e.p, e.mde)
    # test: (62 - 49) / 80 = +16.25 pt; validation: (54 - 54) / 80 = 0
    assert r.comparisons["test"].diff == pytest.approx(13 / 40 / 2)
    assert r.comparisons["validation"].diff == pytest.approx(0.0)
    # validation, where the search selected A's setting, is outside the verdict's Holm family: the
    # family is test alone (adjusted p = p; before, validation's p = 1.0 doubled it to 0.057)
    assert r.family == ["test"] and r.selection == ["validation"]
    assert r.comparisons["test"].p_holm == expected["test"].p < 0.05 < 2 * expected["test"].p
    assert r.comparisons["validation"].p_holm == expected["validation"].p  # its own, unadjusted
    text = markdown(r)
    assert "| test accuracy, mean ± sd [95% CI] | 77.5% ± 3.5" in text  # (30 + 32) / 80, sd of .75/.80
    assert "lora-final:tuned is not significantly better than full-final:tuned: +0.0 pt" in text
    assert "- test: lora-final:tuned is better than full-final:tuned: +16.2 pt" in text
    assert (
        "- validation, the selection split (lora-final:tuned is the final seeds of a search, whose setting was "
        "chosen on validation), reported outside the verdict and its Holm family: " in text
    )
    assert "| validation | 67.5% | 67.5% | +0.00 |" in text and "| – (outside) |" in text
    assert "Holm-adjusted over the verdict's 1 split(s) (test)" in text


def test_cli_prints_and_writes_the_comparison(folders, tmp_path, capsys):
    out = tmp_path / "cmp.md"
    assert main(["-q", "study", "compare", str(folders[0]), f"{folders[1]}:tuned", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "Holm" in printed and "| validation |" in printed


def test_unequal_seeds_pair_on_the_shared_ones(tmp_path):
    a = one_cell(tmp_path / "a", "a", "x", "lora", A_TEST, A_VAL)
    b = one_cell(tmp_path / "b", "b", "y", "full", {**B_TEST, 3: (40, 0)}, {**B_VAL, 3: (40, 0)}, seeds=(1, 2, 3))
    c = compare_sides(resolve(str(a)), resolve(str(b))).comparisons["test"]
    assert (c.seeds_a, c.seeds_b, c.paired) == (2, 3, 2)  # seed 3 of B has no partner: left out
    assert "compared on the 2 paired seeds only" in markdown(compare_sides(resolve(str(a)), resolve(str(b))))


def test_bad_arguments_are_one_line_errors(folders, tmp_path, capsys):
    two = fake_study(
        tmp_path / "two",
        StudySpec(
            name="two",
            cells=[{"name": "p", "method": "head"}, {"name": "q", "method": "lora"}],
            seeds=[1],
            base={"model": "fake"},
        ),
        {("p", 1): (20, 0), ("q", 1): (22, 0)},
        {"p": 10, "q": 100},
    )
    with pytest.raises(StudyError, match=r"has 2 cells \(p, q\); name one as .*:CELL"):
        resolve(str(two))
    with pytest.raises(StudyError, match="no cell 'z' \\(cells: p, q\\)"):
        resolve(f"{two}:z")
    with pytest.raises(StudyError, match="neither a study folder .* nor a search folder with final seeds"):
        resolve(str(tmp_path))
    other = tmp_path / "other"
    shutil.copytree(folders[1], other)
    for run in (other / "runs").iterdir():  # the same runs, scored on other test sentences
        csv = run / "predictions_test.csv"
        csv.write_text(csv.read_text().replace("sentence number 3 ", "sentence number three "))
    with pytest.raises(StudyError, match="scored on different test examples"):
        compare_sides(resolve(str(folders[1])), resolve(str(other)))
    capsys.readouterr()
    assert main(["-q", "study", "compare", str(two), str(folders[1])]) == 2
    assert main(["-q", "study", "compare", str(folders[1]), str(folders[1]), "--out", str(tmp_path / "no/x.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("loralab: error: ") for line in err)
    assert "name one as" in err[0] and "does not exist" in err[1]
    assert not np.any([p.name == "x.md" for p in tmp_path.rglob("*")])

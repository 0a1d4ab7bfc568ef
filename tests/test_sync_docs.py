"""``scripts/sync_docs.py``: study excerpts in Markdown files are rewritten from a real
``loralab study report`` of a study folder made by hand, and only between their markers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.study.report import build
from loralab.study.spec import StudySpec
from test_study_report import fake_study

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sync_docs.py"
_spec = importlib.util.spec_from_file_location("sync_docs", SCRIPT)
sync_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_docs)


@pytest.fixture()
def studies(tmp_path) -> Path:
    """``tmp/studies/ranks``: rank 4 right on 20-24 of 40, rank 8 on 30-32, 3 seeds; reported."""
    spec = StudySpec(
        name="ranks",
        base={"model": "fake-model", "method": "lora"},
        grid={"rank": [4, 8]},
        cells=[],
        seeds=[1, 2, 3],
        baseline="rank=4",
    )
    right = {
        (f"rank={r}", s): (n, s)
        for r, ns in {4: (20, 22, 24), 8: (30, 31, 32)}.items()
        for s, n in zip((1, 2, 3), ns, strict=True)
    }
    build(fake_study(tmp_path / "studies" / "ranks", spec, right, {"rank=4": 4000, "rank=8": 8000}))
    return tmp_path / "studies"


def doc_with(tmp_path: Path, marker: str) -> Path:
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(f"# Page\n\nbefore\n\n{marker}\nstale text\n<!-- /study-excerpt -->\n\nafter\n")
    return doc


def test_a_block_is_rewritten_from_the_report_and_the_rest_is_kept(tmp_path, studies):
    doc = doc_with(tmp_path, "<!-- study-excerpt: ranks sections=cells,baseline plot=accuracy_vs_params -->")
    report = (studies / "ranks" / "report.md").read_text()
    n, missing = sync_docs.sync(doc, studies, tmp_path / "docs" / "img")
    text = doc.read_text()
    assert (n, missing) == (1, [])
    assert "stale text" not in text and text.startswith("# Page\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    # run time: 3 x (2 x 5 s + 10) + 3 x (2 x 9 s + 10) = 144 s = 0.04 h (see write_run)
    assert (
        "*From `ranks/report.md` (`loralab study report`): 6 of 6 runs finished, 0.04 h of run time, report generated"
        in text
    )
    cells_row = next(line for line in report.splitlines() if line.startswith("| rank=8 | 3/3 |"))
    assert cells_row in text  # the report's own row, verbatim
    baseline_row = next(line for line in report.splitlines() if line.startswith("| rank=8 | ") and "/ " in line)
    assert baseline_row in text
    assert (tmp_path / "docs" / "img" / "ranks-accuracy-vs-params.png").is_file()
    assert "![ranks: accuracy vs params](img/ranks-accuracy-vs-params.png)" in text
    # a second sync of the same report changes nothing
    sync_docs.sync(doc, studies, tmp_path / "docs" / "img")
    assert doc.read_text() == text


def test_a_study_without_a_report_is_left_alone_unless_strict(tmp_path, studies):
    doc = doc_with(tmp_path, "<!-- study-excerpt: not-run-yet sections=cells -->")
    before = doc.read_text()
    assert sync_docs.sync(doc, studies, tmp_path / "img") == (0, ["not-run-yet"])
    assert doc.read_text() == before
    with pytest.raises(sync_docs.SyncError, match="no report.md under .* for not-run-yet"):
        sync_docs.sync(doc, studies, tmp_path / "img", strict=True)
    assert doc.read_text() == before


def test_a_bad_marker_is_one_line_naming_the_file(tmp_path, studies):
    doc = doc_with(tmp_path, "<!-- study-excerpt: ranks sections=cells,speed -->")
    before = doc.read_text()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--studies", str(studies), str(doc)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"sync_docs: {doc}: unknown section 'speed' for ranks (choose from findings, cells, costs, baseline, pairs)"
    ]
    assert doc.read_text() == before

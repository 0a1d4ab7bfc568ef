"""``loralab study pack`` / ``study unpack``: a study's report inputs in one small archive that
rebuilds the same report elsewhere and resumes the study (training only what it lacks)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from loralab.cli import main
from loralab.experiments.folder import StudyError
from loralab.study.pack import pack_study, report_inputs, unpack_study
from loralab.study.plan import make_plan
from loralab.study.report import build
from loralab.study.runner import run_study
from loralab.study.spec import load_spec


@pytest.fixture(scope="module")
def study(tiny_models, tiny_data, tmp_path_factory):
    """A finished tiny study (2 cells x 2 seeds) and its spec file."""
    tmp = tmp_path_factory.mktemp("pack")
    spec_file = tmp / "tiny.yaml"
    spec_file.write_text(
        "name: tiny\n"
        f"base: {{model: {tiny_models['bert']}, data_dir: {tiny_data}, epochs: 1, batch_size: 16, rank: 4, "
        "alpha: 8, max_length: 48, device: cpu}\n"
        "cells:\n  - {name: head, method: head}\n  - {name: lora, method: lora}\n"
        "seeds: [1, 2]\nbaseline: head\n"
    )
    plan = make_plan(load_spec(spec_file), tmp / "out")
    run_study(plan, jobs=1, threads=1, echo=lambda _: None)
    build(plan.root)
    return plan, spec_file


def _report(root: Path) -> dict:
    build(root)
    got = json.loads((root / "report.json").read_text())
    return {k: got[k] for k in ("cells", "against_baseline", "best", "findings")}


def test_the_archive_holds_the_report_inputs_only_and_rebuilds_the_same_report(study, tmp_path, capsys):
    plan, _ = study
    out = tmp_path / "tiny.tar.xz"
    assert main(["-q", "study", "pack", str(plan.root), "--out", str(out)]) == 0
    assert "packed 4 finished runs" in capsys.readouterr().out
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "tiny/study.json" in names and all(n.startswith("tiny/") for n in names)
    assert not [n for n in names if n.endswith((".safetensors", ".png", ".bin"))]
    assert sum(n.endswith("/results.json") for n in names) == 4
    assert any(n.endswith("/predictions_validation.csv") for n in names)
    assert out.stat().st_size < 200_000
    again = pack_study(plan.root, tmp_path / "again.tar.xz")  # deterministic bytes
    assert again.path.read_bytes() == out.read_bytes()

    dest = tmp_path / "restored"
    assert main(["-q", "study", "unpack", str(out), "--out", str(dest)]) == 0
    want = _report(plan.root)
    got = _report(dest)
    assert got["cells"] == want["cells"] and got["best"] == want["best"]
    assert got["against_baseline"] == want["against_baseline"]


def test_an_unpacked_partial_study_resumes_only_its_missing_run(study, tmp_path):
    plan, spec_file = study
    partial = tmp_path / "partial"
    shutil.copytree(plan.root, partial)
    missing = plan.runs[-1].id
    shutil.rmtree(partial / "runs" / missing)
    archive = pack_study(partial, tmp_path / "partial.tar.xz")
    assert archive.runs == 3
    dest = unpack_study(archive.path, tmp_path / "elsewhere" / "tiny")
    outcome = run_study(make_plan(load_spec(spec_file), dest), jobs=1, threads=1, echo=lambda _: None)
    assert outcome.trained == [missing] and len(outcome.skipped) == 3 and not outcome.failed
    assert len([p for p in report_inputs(dest) if p.name == "results.json"]) == 4


def test_bad_archives_and_destinations_are_one_line_errors(study, tmp_path, capsys):
    plan, _ = study
    good = pack_study(plan.root, tmp_path / "good.tar.xz").path
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(StudyError, match="exists and is not empty"):
        unpack_study(good, busy)
    (tmp_path / "junk.tar.xz").write_bytes(b"not an archive")
    assert main(["-q", "study", "unpack", str(tmp_path / "junk.tar.xz"), "--out", str(tmp_path / "j")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable archive" in err[0] and not (tmp_path / "j").exists()
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        link = tarfile.TarInfo("tiny/study.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        data = b"{}"
        info = tarfile.TarInfo("tiny/runs/x/results.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(StudyError, match="one folder of plain files"):
        unpack_study(evil, tmp_path / "e")
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e.*"))
    with pytest.raises(StudyError, match="not a study folder"):
        pack_study(tmp_path, tmp_path / "x.tar.xz")


def test_sync_docs_rebuilds_an_excerpt_from_an_archive(study, tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("sync_docs", REPO / "scripts" / "sync_docs.py")
    sync_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync_docs)
    plan, _ = study
    kept = tmp_path / "kept"
    kept.mkdir()
    pack_study(plan.root, kept / "tiny.tar.xz")
    doc = tmp_path / "doc.md"
    doc.write_text("# Results\n\n<!-- study-excerpt: tiny sections=cells -->\n<!-- /study-excerpt -->\n")
    assert sync_docs.main([str(doc), "--studies", str(kept), "--img-dir", str(tmp_path / "img")]) == 0
    text = doc.read_text()
    assert "4 of 4 runs finished" in text and "| head | 2/2 |" in text
    assert list(kept.iterdir()) == [kept / "tiny.tar.xz"]  # unpacked elsewhere, nothing left beside it

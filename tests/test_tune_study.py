"""Tuned studies: a study file's ``tune:`` searches each cell first, then runs the seeds at the best setting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from loralab.errors import ConfigError
from loralab.study.spec import StudySpec

pytest.importorskip("optuna", reason="needs the tune extra: pip install 'loralab[tune]'")

GOOD_LR, BAD_LR = 5e-3, 1e-6  # as in test_tune.py: full fine-tuning of the tiny BERT


def study_dict(model, data, **tune) -> dict:
    return {
        "name": "tuned",
        "base": {
            "model": str(model),
            "data_dir": str(data),
            "method": "full",
            "epochs": 4,
            "batch_size": 8,
            "eval_batch_size": 32,
            "max_length": 48,
            "warmup_ratio": 0.0,
            "device": "cpu",
            "log_every": 100,
        },
        "cells": [{"name": "full", "lr": BAD_LR}, {"name": "untuned", "method": "head"}],
        "seeds": [1],
        "tune": {"cells": {"full": {"lr": [GOOD_LR, BAD_LR]}}, "trials": 2, "sampler": "grid", **tune},
    }


def test_tune_key_is_checked(tmp_path):
    base = study_dict(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"s\.yaml: tune\.cells: 'fulll' is not a cell"):
        StudySpec.from_dict({**base, "tune": {"cells": {"fulll": {"lr": [1e-3]}}}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"tune \(cell 'full'\): space\.lr: `type` must be one of"):
        StudySpec.from_dict({**base, "tune": {"cells": {"full": {"lr": {"type": "normal"}}}}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"tune: unknown key 'trails'"):
        StudySpec.from_dict({**base, "tune": {"space": {"lr": [1e-3]}, "trails": 3}}, source="s.yaml")


def test_tuned_study_runs_its_seeds_at_the_best_setting(tmp_path, tiny_models):
    from conftest import synthetic_rows, write_tsv

    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", synthetic_rows(160, 0))
    write_tsv(data / "validation.tsv", synthetic_rows(64, 1))
    write_tsv(data / "test.tsv", synthetic_rows(32, 2))
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(study_dict(tiny_models["bert"], data)), encoding="utf-8")
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "-q", "study", "run", str(path), "--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    tuning = json.loads((out / "tuning.json").read_text())
    assert list(tuning) == ["full"] and tuning["full"]["params"] == {"lr": GOOD_LR} and tuning["full"]["trials"] == 2
    study = json.loads((out / "study.json").read_text())
    cells = {c["name"]: c["config"] for c in study["cells"]}
    assert cells["full"]["lr"] == GOOD_LR and cells["untuned"]["method"] == "head"
    runs = {r["cell"]: out / r["dir"] for r in study["runs"]}
    assert json.loads((runs["full"] / "results.json").read_text())["lr"] == GOOD_LR
    assert json.loads((runs["full"] / "results.json").read_text())["test"] is not None  # the study scores test
    # a dry run once the searches are done plans the tuned cells: every run is already there
    dry = subprocess.run(
        [sys.executable, "-m", "loralab", "-q", "study", "run", str(path), "--out", str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "every cell's search is done" in dry.stdout and "[todo]" not in dry.stdout, dry.stdout
    assert all(f"{r['dir'].split('/')[-1]}  [done]" in dry.stdout for r in study["runs"]), dry.stdout

    from loralab.study.report import build

    build(out)
    report = (out / "report.md").read_text()
    assert "## Tuning" in report and "lr=0.005" in report, report
    assert json.loads((out / "report.json").read_text())["tuning"] == tuning
    assert (
        tuning["full"]["search_seconds"] > 0 and f"{tuning['full']['search_seconds']:,.0f} training seconds" in report
    )

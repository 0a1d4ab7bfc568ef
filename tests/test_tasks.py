"""Tasks beyond one text and a class: sentence pairs, regression, class weights, a held-out
validation split and unlabeled test files, on tiny models and data derived from the synthetic
sentiment sentences ("do these two sentences share a sentiment?", a score read from the text)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import synthetic_rows, tiny_run_config
from loralab.config import DataConfig, TrainConfig
from loralab.data import encode, load_data
from loralab.errors import ConfigError, DataError
from loralab.evaluation.metrics import regression_metrics
from loralab.training.step import class_weight_vector, micro_loss


def pair_rows(n: int, seed: int) -> list[tuple[str, str, int]]:
    """``(sentence1, sentence2, same sentiment)``: 1 when both sentences carry the same sentiment."""
    a, b = synthetic_rows(n, seed), synthetic_rows(n, seed + 100)
    return [(s1, s2, int(y1 == y2)) for (s1, y1), (s2, y2) in zip(a, b)]


def score_of(text: str, label: int) -> float:
    """A number read from the text: 3 for a positive sentence, 0 for a negative one, plus 0.1 a word."""
    return round(3.0 * label + 0.1 * len(text.split()), 2)


def write_pair_dir(d: Path, n: int = 64, seed: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, (split, k) in enumerate((("train", n), ("validation", n // 2), ("test", n // 2))):
        lines = "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pair_rows(k, seed + 10 * i))
        (d / f"{split}.tsv").write_text("sentence1\tsentence2\tlabel\n" + lines, encoding="utf-8")
    return d


def write_regression_dir(d: Path, n: int = 64, seed: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, (split, k) in enumerate((("train", n), ("validation", n // 2))):
        lines = "".join(f"{t}\t{score_of(t, y)}\n" for t, y in synthetic_rows(k, seed + i))
        (d / f"{split}.tsv").write_text("sentence\tscore\n" + lines, encoding="utf-8")
    return d


# ---- data ---------------------------------------------------------------------------------------


def test_pairs_are_read_and_tokenised_as_pairs_truncated_longest_first(tmp_path, tiny_models):
    from loralab.models.backbones import load_tokenizer

    d = write_pair_dir(tmp_path / "pairs")
    bundle = load_data(DataConfig(data_dir=str(d), text_column="sentence1", text_pair_column="sentence2"), seed=0)
    assert bundle.train.pairs is not None and len(bundle.train.pairs) == len(bundle.train.texts) == 64
    assert bundle.labels == ["0", "1"]
    tok = load_tokenizer(str(tiny_models["bert"]))
    long, short = "good " * 30, "bad film"
    ids = encode(tok, [long], 16, [short])[0]
    assert len(ids) == 16
    sep = tok.sep_token_id
    first, second = ids[1 : ids.index(sep)], ids[ids.index(sep) + 1 : -1]
    # longest-first: the long text lost tokens, the short one kept all of its own
    assert second == tok(short, add_special_tokens=False)["input_ids"]
    assert len(first) == 16 - 3 - len(second)


def test_regression_labels_are_numbers_and_continuous_labels_are_refused_with_a_hint(tmp_path):
    d = write_regression_dir(tmp_path / "reg")
    with pytest.raises(DataError, match=r"train.tsv: .*distinct numeric labels .* --task regression") as err:
        load_data(DataConfig(data_dir=str(d), label_column="score"), seed=0)
    assert "\n" not in str(err.value)
    bundle = load_data(DataConfig(data_dir=str(d), label_column="score", task="regression"), seed=0)
    assert bundle.task == "regression" and bundle.label_names == ["score"]
    assert all(isinstance(y, float) for y in bundle.train.labels)
    assert bundle.validation.labels[0] == float((d / "validation.tsv").read_text().splitlines()[1].split("\t")[1])


def test_a_regression_label_that_is_not_a_number_is_an_error_at_its_line(tmp_path):
    d = write_regression_dir(tmp_path / "reg")
    with open(d / "validation.tsv", "a", encoding="utf-8") as f:
        f.write("good film \thigh\n")
    with pytest.raises(DataError, match=r"validation.tsv:34: label 'high' is not a number"):
        load_data(DataConfig(data_dir=str(d), label_column="score", task="regression"), seed=0)


def test_validation_labels_must_be_in_the_training_label_set(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.csv").write_text("text,y\ngood,pos\nbad,neg\n", encoding="utf-8")
    (d / "validation.csv").write_text("text,y\nfine,pos\nmeh,neutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"validation.csv:3: label 'neutral' is not one of \['neg', 'pos'\]"):
        load_data(DataConfig(data_dir=str(d), text_column="text", label_column="y"), seed=0)


def test_a_training_file_alone_needs_validation_split_which_is_stratified_and_seeded(tmp_path, monkeypatch):
    monkeypatch.delenv("LORALAB_DATA_DIR", raising=False)  # else its validation file fills the split
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in synthetic_rows(100, 0)), "utf-8")
    with pytest.raises(DataError, match=r"no validation file given; .*--validation-split 0.1"):
        load_data(DataConfig(train_file=str(train)), seed=0)
    cfg = DataConfig(train_file=str(train), validation_split=0.1)
    a, b, c = load_data(cfg, seed=0), load_data(cfg, seed=0), load_data(cfg, seed=1)
    assert len(a.validation) == 10 and len(a.train) == 90
    assert sorted(a.validation.labels) == [0] * 5 + [1] * 5  # stratified: the file is half and half
    assert a.validation.texts == b.validation.texts and a.validation.texts != c.validation.texts
    assert not set(a.validation.texts) & set(a.train.texts)
    assert a.validation.path.endswith("(--validation-split 0.1)")


def test_a_test_file_without_the_label_column_reads_unlabeled(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    rows = synthetic_rows(8, 0)
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), "utf-8")
    (d / "validation.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), "utf-8")
    (d / "test.jsonl").write_text("".join(json.dumps({"sentence": t}) + "\n" for t, _ in rows), "utf-8")
    bundle = load_data(DataConfig(data_dir=str(d)), seed=0)
    assert bundle.test.labels is None and not bundle.test.labeled and len(bundle.test) == 8


# ---- loss and metrics ----------------------------------------------------------------------------


def test_class_weights_change_the_loss_as_computed_by_hand():
    logits = torch.tensor([[2.0, 0.5], [0.1, 0.3], [1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 1])
    weights = class_weight_vector("balanced", [0, 1, 1, 1], 2)
    assert weights.tolist() == pytest.approx([4 / (2 * 1), 4 / (2 * 3)])  # n / (classes x count)
    logp = torch.log_softmax(logits.double(), dim=1)
    nll = [-logp[i, y].item() for i, y in enumerate(labels.tolist())]
    by_hand = sum(weights[y].item() * loss_y for y, loss_y in zip(labels.tolist(), nll)) / 4
    loss, logged = micro_loss(logits, labels, None, 4, 1, 1, weights)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert loss.item() != pytest.approx(sum(nll) / 4, rel=1e-3)  # the weights did change it
    # the same loss when the batch is split over two parts (accumulation or processes)
    ones = torch.ones(2)
    halves = [micro_loss(logits[i : i + 2], labels[i : i + 2], ones, 4, 2, 1, weights)[0] for i in (0, 2)]
    assert sum(h.item() for h in halves) == pytest.approx(by_hand, rel=1e-6)
    explicit = class_weight_vector(TrainConfig(class_weights="1,3").parsed_class_weights(), [0, 1], 2)
    assert explicit.tolist() == [1.0, 3.0]
    with pytest.raises(ConfigError, match="--class-weights gives 3 weights for 2 labels"):
        class_weight_vector([1.0, 2.0, 3.0], [0, 1], 2)
    with pytest.raises(ConfigError, match="--class-weights"):
        TrainConfig(class_weights="heavy").validate()


def test_regression_loss_is_the_mean_squared_error():
    out = torch.tensor([[1.0], [2.0], [0.5]])
    y = torch.tensor([1.5, 2.0, -0.5])
    loss, logged = micro_loss(out, y, None, 3, 1, 1)
    assert loss.item() == pytest.approx((0.25 + 0 + 1.0) / 3)
    assert logged.item() == pytest.approx(0.25 + 1.0)


def test_regression_metrics_match_scipy_and_sklearn():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_squared_error

    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    pred = y + rng.normal(scale=0.5, size=50)
    m = regression_metrics(y, pred[:, None])
    assert m["pearson"] == pytest.approx(pearsonr(y, pred)[0])
    assert m["spearman"] == pytest.approx(spearmanr(y, pred)[0])
    assert m["mse"] == pytest.approx(mean_squared_error(y, pred)) and m["loss"] == m["mse"]
    assert m["examples"] == 50
    assert regression_metrics([1.0, 2.0], np.array([[3.0], [3.0]]))["pearson"] == 0.0  # constant: 0, not NaN


# ---- whole runs on tiny models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_run(tiny_models, tmp_path_factory):
    from loralab import train

    root = tmp_path_factory.mktemp("pair")
    d = write_pair_dir(root / "data")
    cfg = tiny_run_config(
        tiny_models["bert"], d, root / "run", method="lora", text_column="sentence1", text_pair_column="sentence2"
    )
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def regression_run(tiny_models, tmp_path_factory):
    from loralab import train

    root = tmp_path_factory.mktemp("reg")
    d = write_regression_dir(root / "data")
    cfg = tiny_run_config(tiny_models["bert"], d, root / "run", method="full", label_column="score", task="regression")
    return train(cfg).run_dir


def test_a_pair_run_records_its_columns_and_reloads_to_its_prediction_files(pair_run):
    from loralab import load_run
    from loralab.inference.predictor import Predictor

    run = load_run(pair_run)
    assert run.meta["task"] == "classification" and run.results["task"] == "classification"
    assert run.meta["columns"] == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    rows = run.predictions("test")
    assert {"text_pair", "label_name", "prediction_name"} <= set(rows[0])
    assert all(r["prediction_name"] == run.label_names[r["prediction"]] for r in rows)
    preds = Predictor.from_run(pair_run, device="cpu").predict(
        [r["text"] for r in rows], [r["text_pair"] for r in rows]
    )
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    assert preds[0]["text_pair"] == rows[0]["text_pair"]
    assert [round(p["confidence"], 6) for p in preds] == pytest.approx([r["confidence"] for r in rows], abs=2e-6)


def test_a_regression_run_has_one_output_read_by_plain_transformers_as_regression(regression_run):
    from transformers import AutoConfig

    from loralab import load_run
    from loralab.inference.predictor import Predictor

    run = load_run(regression_run)
    val = run.results["validation"]
    assert {"pearson", "spearman", "mse"} <= set(val) and "accuracy" not in val
    assert run.meta["task"] == "regression" and run.label_names == ["score"]
    saved = AutoConfig.from_pretrained(regression_run / "model")
    assert saved.num_labels == 1 and saved.problem_type == "regression"
    rows = run.predictions("validation")
    assert isinstance(rows[0]["label"], float) and rows[0]["confidence"] is None
    preds = Predictor.from_run(regression_run, device="cpu").predict([r["text"] for r in rows])
    assert [p["score"] for p in preds] == pytest.approx([r["prediction"] for r in rows], abs=1e-5)
    assert not (regression_run / "confusion_matrix.png").exists()


def test_an_export_of_a_regression_run_is_a_regression_model(regression_run, tmp_path):
    from transformers import AutoConfig

    from loralab.exports import export_run

    out = tmp_path / "export"
    export_run(regression_run, out)
    saved = AutoConfig.from_pretrained(out)
    assert saved.num_labels == 1 and saved.problem_type == "regression" and saved.id2label == {0: "score"}
    card = (out / "README.md").read_text()
    assert "| split | examples | Pearson | Spearman | MSE |" in card and "95% CI (Wilson)" not in card


def test_class_weights_train_and_a_regression_run_refuses_them(tiny_models, tmp_path):
    from loralab import train

    d = write_regression_dir(tmp_path / "reg", n=16)
    cfg = tiny_run_config(
        tiny_models["bert"], d, tmp_path / "r", label_column="score", task="regression", class_weights="balanced"
    )
    with pytest.raises(ConfigError, match="--class-weights weighs classes"):
        train(cfg)


def test_random_pair_rows_are_balanced_enough_to_learn():
    labels = [y for _, _, y in pair_rows(200, 0)]
    assert 0.3 < sum(labels) / len(labels) < 0.7
    assert pair_rows(5, 3) == pair_rows(5, 3)


def test_serve_answers_text_pairs_and_regression_scores(pair_run, regression_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from loralab import load_run
    from loralab.serving.app import create_app
    from loralab.serving.server import load_predictor

    predictor, info = load_predictor(pair_run, device="cpu")
    assert info["text_pair"] == "sentence2"
    rows = load_run(pair_run).predictions("test")[:3]
    body = {"texts": [r["text"] for r in rows], "text_pairs": [r["text_pair"] for r in rows]}
    with TestClient(create_app(predictor, info=info)) as c:
        answer = c.post("/predict", json=body)
        assert answer.status_code == 200
        assert [p["label"] for p in answer.json()["predictions"]] == [r["prediction"] for r in rows]
        one = c.post("/predict", json={"text": rows[0]["text"], "text_pair": rows[0]["text_pair"]})
        assert one.status_code == 200 and len(one.json()["predictions"]) == 1
        first = answer.json()["predictions"][0]  # alone, the pair is padded less: equal to float precision
        assert one.json()["predictions"][0]["label"] == first["label"]
        assert one.json()["predictions"][0]["confidence"] == pytest.approx(first["confidence"], abs=1e-6)
        missing = c.post("/predict", json={"texts": ["a"]})
        assert missing.status_code == 422 and "text_pairs" in missing.json()["detail"]
        uneven = c.post("/predict", json={"texts": ["a", "b"], "text_pairs": ["c"]})
        assert uneven.status_code == 422
        assert 'id="pairs"' in c.get("/").text
    predictor, info = load_predictor(regression_run, device="cpu")
    assert info["task"] == "regression"
    rows = load_run(regression_run).predictions("validation")[:2]
    with TestClient(create_app(predictor, info=info)) as c:
        preds = c.post("/predict", json={"texts": [r["text"] for r in rows]}).json()["predictions"]
        assert [set(p) for p in preds] == [{"score"}, {"score"}]
        assert [p["score"] for p in preds] == pytest.approx([r["prediction"] for r in rows], abs=1e-5)
        refused = c.post("/predict", json={"texts": ["a"], "text_pairs": ["b"]})
        assert refused.status_code == 422 and "single texts" in refused.json()["detail"]


def test_an_export_of_a_pair_run_checks_and_predicts_pairs(pair_run, tmp_path):
    from loralab import load_run
    from loralab.exports import export_run
    from loralab.inference.predictor import Predictor

    out = tmp_path / "export"
    export_run(pair_run, out, merge=True)  # checked against predictions_validation.csv, pairs included
    meta = json.loads((out / "export.json").read_text())
    assert meta["columns"]["text_pair"] == "sentence2" and meta["task"] == "classification"
    rows = load_run(pair_run).predictions("validation")[:4]
    preds = Predictor.from_run(out, device="cpu").predict([r["text"] for r in rows], [r["text_pair"] for r in rows])
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]


def test_analysis_refuses_a_regression_run_and_the_table_shows_its_correlations(regression_run):
    from loralab.errors import LoralabError
    from loralab.evaluation.analysis_files import run_predictions
    from loralab.evaluation.table import row_of

    with pytest.raises(LoralabError, match="a regression run"):
        run_predictions(regression_run, None)
    row = row_of(regression_run)
    assert row["val acc"].startswith("r ") and row["val F1"].startswith("ρ ")


def test_pair_runs_are_not_served_as_adapters_of_one_backbone(pair_run):
    from loralab.inference.multilora import AdapterError
    from loralab.inference.registry import read_lora_run

    with pytest.raises(AdapterError, match="a sentence-pair run: adapters served together classify single texts"):
        read_lora_run(pair_run)


# ---------------------------------------------------------------------------------------------
# Segment ids: a pair is read as the tokenizer and plain transformers read it
# ---------------------------------------------------------------------------------------------

FIRSTS = ["a good film", "the plot is boring and awful , and the acting is not very smart either", "dull"]
SECONDS = ["charming", "dull", "it 's a movie . the story is a very tedious and clumsy mess"]


@pytest.mark.parametrize("max_length", [64, 12])  # 12: pairs cut longest-first
def test_segment_ids_rebuilt_from_the_ids_are_the_tokenizers_token_type_ids(tiny_models, max_length):
    from transformers import AutoConfig

    from loralab.data import pad_batch, segment_ids, segment_separator
    from loralab.models.backbones import load_tokenizer

    tok = load_tokenizer(str(tiny_models["bert"]))
    config = AutoConfig.from_pretrained(tiny_models["bert"])
    want = tok(FIRSTS, SECONDS, truncation="longest_first", max_length=max_length, padding=True, return_tensors="pt")
    ids, mask = pad_batch(encode(tok, FIRSTS, max_length, SECONDS), tok.pad_token_id)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    sep = segment_separator(tok, config, pairs=True)
    assert sep == tok.sep_token_id
    got = segment_ids(ids, mask, sep)
    assert torch.equal(got, want["token_type_ids"]) and got.any()
    # single texts and models without segment embeddings get none
    assert segment_separator(tok, config, pairs=False) is None
    roberta = load_tokenizer(str(tiny_models["roberta"]))  # its tokenizer returns no token_type_ids
    assert segment_separator(roberta, AutoConfig.from_pretrained(tiny_models["roberta"]), pairs=True) is None


@pytest.fixture(scope="module")
def segment_pair_run(tiny_models, tmp_path_factory):
    """A pair run on a tiny BERT whose second-segment embedding is made large, so reading a pair
    without its segment ids visibly changes the logits."""
    from transformers import AutoModel, AutoTokenizer

    from loralab import train

    root = tmp_path_factory.mktemp("segments")
    model = AutoModel.from_pretrained(tiny_models["bert"])
    with torch.no_grad():
        model.embeddings.token_type_embeddings.weight[1] *= 100
    model.save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(root / "bert")
    cfg = tiny_run_config(
        root / "bert",
        write_pair_dir(root / "data"),
        root / "run",
        text_column="sentence1",
        text_pair_column="sentence2",
        method="full",
        lr=0.01,
        epochs=3,
    )
    return train(cfg).run_dir


def test_plain_transformers_reads_a_pair_export_as_the_run_did(segment_pair_run, tmp_path):
    """The tokenizer's token_type_ids mark the second text; the run trained and predicted with them."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loralab import load_run
    from loralab.exports import export_run

    out = export_run(segment_pair_run, tmp_path / "merged", merge=True).path
    rows = load_run(segment_pair_run).predictions("validation")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = tok(
        [r["text"] for r in rows], [r["text_pair"] for r in rows], padding=True, truncation=True, return_tensors="pt"
    )
    assert batch["token_type_ids"].any()
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)
        without = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.softmax(-1)
    assert probs.argmax(-1).tolist() == [r["prediction"] for r in rows]
    assert probs.max(-1).values.tolist() == pytest.approx([r["confidence"] for r in rows], abs=1e-5)
    assert (probs - without).abs().max() > 1e-3  # the segment ids matter to this model


def test_the_training_collator_gives_the_segment_ids_of_a_pair(tiny_models):
    from transformers import AutoConfig

    from loralab.data import PadCollator, segment_separator
    from loralab.models.backbones import load_tokenizer

    tok = load_tokenizer(str(tiny_models["bert"]))
    sep = segment_separator(tok, AutoConfig.from_pretrained(tiny_models["bert"]), pairs=True)
    ids = encode(tok, FIRSTS, 64, SECONDS)
    batch = PadCollator(tok.pad_token_id, sep)([(x, 1) for x in ids])
    want = tok(FIRSTS, SECONDS, truncation="longest_first", max_length=64, padding=True, return_tensors="pt")
    assert torch.equal(batch["token_type_ids"], want["token_type_ids"])
    assert "token_type_ids" not in PadCollator(tok.pad_token_id)([(x, 1) for x in ids])


def _card_code(folder: Path, **values) -> str:
    import re

    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    code = code.replace('"PATH/TO/THIS/FOLDER"', repr(str(folder)))
    for name, value in values.items():
        code, n = re.subn(rf"^{name} = \[.*\]$", f"{name} = {value!r}", code, flags=re.M)
        assert n == 1, name
    return code


def test_the_onnx_card_snippet_scores_pairs_and_regression_like_the_run(
    segment_pair_run, regression_run, tmp_path, capsys
):
    pytest.importorskip("onnxruntime")
    from loralab import load_run
    from loralab.exports import export_run

    rows = load_run(segment_pair_run).predictions("validation")[:4]
    folder = export_run(segment_pair_run, tmp_path / "pair-onnx", format="onnx").path
    scope: dict = {}
    exec(_card_code(folder, texts=[r["text"] for r in rows], pairs=[r["text_pair"] for r in rows]), scope)
    assert scope["probs"].argmax(1).tolist() == [r["prediction"] for r in rows]
    assert scope["probs"].max(1).tolist() == pytest.approx([r["confidence"] for r in rows], abs=1e-4)

    rows = load_run(regression_run).predictions("validation")[:4]
    folder = export_run(regression_run, tmp_path / "reg-onnx", format="onnx").path
    card = (folder / "README.md").read_text()
    assert "softmax" not in card and "`[batch, 1]`: the score" in card
    scope = {}
    exec(_card_code(folder, texts=[r["text"] for r in rows]), scope)
    assert scope["scores"].tolist() == pytest.approx([r["prediction"] for r in rows], abs=1e-4)
    capsys.readouterr()


def test_error_analysis_of_a_pair_run_shows_both_texts(pair_run, tmp_path):
    from loralab import load_run
    from loralab.cli import main
    from loralab.evaluation.analysis_files import PAIR_JOIN

    assert main(["-q", "analyze", str(pair_run), "--out", str(tmp_path / "a")]) == 0
    shown = json.loads((tmp_path / "a" / "analysis.json").read_text())["confident_mistakes"]
    rows = {(r["text"], r["text_pair"]) for r in load_run(pair_run).predictions("test")}
    assert shown and all(tuple(m["text"].split(PAIR_JOIN)) in rows for m in shown)

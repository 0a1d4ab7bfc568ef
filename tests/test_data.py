"""Data reading and validation: every bad input is one clear error; quirky files load unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import synthetic_rows, write_tsv
from loralab.config import DataConfig
from loralab.data import load_data, read_records, stratified_subsample
from loralab.errors import DataError


def make_dir(tmp_path: Path, train: bytes | str, validation: str | None = None, name: str = "train.tsv") -> Path:
    d = tmp_path / "d"
    d.mkdir()
    (d / name).write_bytes(train if isinstance(train, bytes) else train.encode())
    if validation is None:
        write_tsv(d / "validation.tsv", synthetic_rows(4, 1))
    else:
        (d / "validation.tsv").write_text(validation, encoding="utf-8")
    return d


BAD_CASES = {
    "missing_column": ("text\tlabel\ngood film \t1\n", 1, "missing column 'sentence'"),
    "label_outside_set": ("sentence\tlabel\ngood \t1\nbad \t0\nodd \t2\n", 4, "label '2'"),
    "empty_text": ("sentence\tlabel\ngood \t1\n  \t0\n", 3, "empty text"),
    "wrong_field_count": ("sentence\tlabel\ngood \t1\nbad\tfilm \t0\n", 3, "expected 2 fields, found 3"),
    "empty_file": ("", 1, "file is empty"),
    "header_only": ("sentence\tlabel\n", 2, "no examples"),
    "blank_line": ("sentence\tlabel\ngood \t1\n\nbad \t0\n", 3, "blank line"),
    "not_utf8": (b"sentence\tlabel\ngood \t1\ncaf\xe9 \t0\n", 3, "not valid UTF-8"),
    "empty_label": ("sentence\tlabel\ngood \t1\nbad \t\n", 3, "empty label"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_train_file_names_file_line_and_problem(tmp_path, case):
    content, line, problem = BAD_CASES[case]
    d = make_dir(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_data(DataConfig(data_dir=str(d)), seed=0)
    assert err.value.path == str(d / "train.tsv")
    assert err.value.line == line
    assert problem in str(err.value)
    assert str(err.value).startswith(f"{d / 'train.tsv'}:{line}: ")
    assert "\n" not in str(err.value)


def test_label_outside_set_in_validation_is_reported(tmp_path):
    d = make_dir(tmp_path, "sentence\tlabel\ngood \t1\nbad \t0\n", "sentence\tlabel\nok \t1\nhm \t7\n")
    with pytest.raises(DataError, match=r"validation.tsv:3: label '7' is not one of"):
        load_data(DataConfig(data_dir=str(d)), seed=0)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
@pytest.mark.parametrize("word", ["positive", "1.0", "2", "-1"])
def test_glue_files_accept_only_0_and_1_whatever_the_odd_label_looks_like(tmp_path, split, word):
    """sentence/label files without --labels are SST-2: a word (or any other value) among the
    numeric labels, in any split, is a FILE:LINE error and never a new class."""
    good = "sentence\tlabel\ngood \t1\nbad \t0\nfine \t1\n"
    bad = f"sentence\tlabel\ngood \t1\nbad \t0\nodd \t{word}\nfine \t1\n"
    d = make_dir(tmp_path, bad if split == "train" else good, bad if split == "validation" else good)
    (d / "test.tsv").write_text(bad if split == "test" else good, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_data(DataConfig(data_dir=str(d)), seed=0)
    assert str(err.value).startswith(f"{d / (split + '.tsv')}:4: label {word!r} is not one of ['0', '1'] (SST-2)")
    assert "--labels" in str(err.value) and "\n" not in str(err.value)
    # naming the label set makes the same files load, with the word as a class of its own
    bundle = load_data(DataConfig(data_dir=str(d), labels=["0", "1", word]), seed=0)
    assert bundle.labels == ["0", "1", word]


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_data(DataConfig(data_dir=str(tmp_path / "nope")), seed=0)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na \t1\nb \t0\n")
    with pytest.raises(DataError, match=r"validation.tsv: file not found"):
        load_data(DataConfig(data_dir=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "missing.csv", "sentence", "label")


def test_env_variable_gives_the_data_dir(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tiny_data))
    bundle = load_data(DataConfig(), seed=0)
    assert len(bundle.train) == 64 and bundle.test is not None and len(bundle.test) == 32


def test_no_data_and_offline_hub_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("LORALAB_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="--data-dir"):
        load_data(DataConfig(), seed=0)


def test_quirky_files_load_every_row_unchanged(tmp_path):
    texts = ['he said "wow" , twice ', "it 's ' quoted ' and \"\" odd ", "naïve café ", "tab-free text "]
    body = "sentence\tlabel\r\n" + "".join(f"{t}\t{i % 2}\r\n" for i, t in enumerate(texts))
    d = make_dir(tmp_path, b"\xef\xbb\xbf" + body.encode("utf-8"))
    bundle = load_data(DataConfig(data_dir=str(d)), seed=0)
    assert bundle.train.texts == texts
    assert bundle.train.labels == [0, 1, 0, 1]
    assert bundle.label_names == ["negative", "positive"]


def test_csv_with_quotes_and_custom_columns(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "train.csv").write_text(
        'review,sentiment\n"a ""great"" film, truly",pos\nplain bad,neg\n"multi\nline",pos\n', encoding="utf-8"
    )
    (d / "validation.csv").write_text("review,sentiment\nfine,pos\nmeh,neg\n", encoding="utf-8")
    cfg = DataConfig(data_dir=str(d), text_column="review", label_column="sentiment")
    bundle = load_data(cfg, seed=0)
    assert bundle.train.texts == ['a "great" film, truly', "plain bad", "multi\nline"]
    assert bundle.labels == ["neg", "pos"] and bundle.train.labels == [1, 0, 1]
    (d / "validation.csv").write_text("review,sentiment\nfine,pos\nmeh,neutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"validation.csv:3: label 'neutral'"):
        load_data(cfg, seed=0)
    # the line of an error counts the lines of a multi-line record before it
    (d / "validation.csv").write_text('review,sentiment\n"multi\nline",pos\nmeh,neutral\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"validation.csv:4: label 'neutral'"):
        load_data(cfg, seed=0)
    # a declared label set admits labels the training file lacks
    bundle = load_data(
        DataConfig(data_dir=str(d), text_column="review", label_column="sentiment", labels=["neg", "neutral", "pos"]),
        seed=0,
    )
    assert bundle.label_names == ["neg", "neutral", "pos"] and bundle.validation.labels == [2, 1]


def test_jsonl_reading_and_errors(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"text": "good", "y": 1}\n{"text": "bad", "y": 0}\n', encoding="utf-8")
    assert read_records(p, "text", "y") == [(1, "good", "1"), (2, "bad", "0")]
    p.write_text('{"text": "good", "y": 1}\n{"text": "bad"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: invalid JSON"):
        read_records(p, "text", "y")
    p.write_text('{"text": "good", "y": 1}\n{"txt": "bad", "y": 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: missing key 'text'"):
        read_records(p, "text", "y")


def test_stratified_subsample_keeps_proportions_and_is_seeded(tiny_data):
    bundle = load_data(DataConfig(data_dir=str(tiny_data)), seed=0)
    a = stratified_subsample(bundle.train, 20, seed=3)
    b = stratified_subsample(bundle.train, 20, seed=3)
    c = stratified_subsample(bundle.train, 20, seed=4)
    assert a.texts == b.texts and a.texts != c.texts
    assert len(a) == 20 and sum(a.labels) == 10
    assert set(a.texts) <= set(bundle.train.texts)
    with pytest.raises(DataError, match="larger than"):
        stratified_subsample(bundle.train, 1000, seed=0)


def test_real_sst2_files_validate(tmp_path):
    from conftest import SST2_DIR

    if not (SST2_DIR / "train.tsv").exists():
        pytest.skip(f"SST-2 not found at {SST2_DIR}")
    bundle = load_data(DataConfig(data_dir=str(SST2_DIR), train_size=1000), seed=0)
    assert (len(bundle.train), len(bundle.validation), len(bundle.test)) == (1000, 872, 1821)
    assert bundle.files()["validation"]["sha256"] == "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"


def test_token_cache_returns_the_same_ids_and_survives_corruption(tmp_path, tiny_models):
    from loralab.data import encode, encode_cached
    from loralab.models.backbones import load_tokenizer

    tok = load_tokenizer(str(tiny_models["bert"]))
    texts = [t for t, _ in synthetic_rows(50, 3)]
    first = encode_cached(tok, texts, 16, root=tmp_path)
    entries = list((tmp_path / "tokens").iterdir())
    assert len(entries) == 1
    assert first == encode(tok, texts, 16)
    assert encode_cached(tok, texts, 16, root=tmp_path) == first  # hit
    assert encode_cached(tok, texts, 8, root=tmp_path) == encode(tok, texts, 8)  # other max length: new key
    assert len(list((tmp_path / "tokens").iterdir())) == 2
    entries[0].write_bytes(b"garbage")
    assert encode_cached(tok, texts, 16, root=tmp_path) == first

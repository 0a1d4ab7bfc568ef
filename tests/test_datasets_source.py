"""``--dataset``: a save_to_disk folder, a folder of data files, a hub id from the cache, and the
one-line error when a hub dataset is not cached and the hub is off (HF_HUB_OFFLINE=1 in tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
pd = pytest.importorskip("pandas")

from loralab.cli import main as cli_main  # noqa: E402
from loralab.config import RunConfig  # noqa: E402
from loralab.data import load_data  # noqa: E402
from loralab.data.datasets_source import map_splits  # noqa: E402
from loralab.errors import DataError  # noqa: E402

NAMES = ["not_equivalent", "equivalent"]


def pair_split(n: int, labeled: bool = True):
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=NAMES),
            "idx": datasets.Value("int32"),
        }
    )
    rows = {
        "sentence1": [f"first sentence {i}" for i in range(n)],
        "sentence2": [f"second sentence {i}" for i in range(n)],
        "label": [(i % 2 if labeled else -1) for i in range(n)],
        "idx": list(range(n)),
    }
    return datasets.Dataset.from_dict(rows, features=features)


def load(**options):
    return load_data(RunConfig.from_flat(options).data, seed=1)


def test_save_to_disk_folder_with_class_labels_pairs_and_an_unlabeled_test(tmp_path):
    folder = tmp_path / "mrpc-like"
    dd = datasets.DatasetDict(
        {"train": pair_split(10), "validation_matched": pair_split(4), "test": pair_split(3, labeled=False)}
    )
    dd.save_to_disk(str(folder))
    b = load(dataset=str(folder), text_column="sentence1", text_pair_column="sentence2")
    assert b.label_names == NAMES and b.labels == ["0", "1"]  # names from the ClassLabel feature
    assert b.train.texts[3] == "first sentence 3" and b.train.pairs[3] == "second sentence 3"
    assert b.train.labels == [i % 2 for i in range(10)]
    assert len(b.validation) == 4 and b.validation.path.endswith("validation_matched")  # MNLI's name mapped
    assert b.test is None  # every label -1 (GLUE's test splits): never scored
    assert b.source == "dataset"


def test_split_names_are_mapped():
    assert map_splits(["train", "validation_matched", "validation_mismatched", "test_matched"]) == {
        "train": "train",
        "validation": "validation_matched",
        "test": "test_matched",
    }
    assert map_splits(["train", "dev"]) == {"train": "train", "validation": "dev"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_folder_of_data_files_gives_the_rows_the_file_readers_give(tmp_path, fmt):
    rows = {
        "train": [("a good film", "pos"), ("a bad film", "neg"), ('so "quoted", ok', "pos"), ("dull", "neg")],
        "validation": [("fine", "pos"), ("awful", "neg")],
    }
    files, named = tmp_path / "files", tmp_path / f"named-{fmt}"
    files.mkdir()
    named.mkdir()
    for split, data in rows.items():
        frame = pd.DataFrame(data, columns=["review", "category"])
        frame.to_csv(files / f"{split}.csv", index=False)  # read by loralab's own reader
        if fmt == "csv":
            frame.to_csv(named / f"{split}.csv", index=False)
        elif fmt == "jsonl":
            frame.to_json(named / f"{split}.jsonl", orient="records", lines=True)
        else:
            frame.to_parquet(named / f"{split}.parquet")
    columns = {"text_column": "review", "label_column": "category"}
    by_files = load(data_dir=str(files), **columns)
    by_name = load(dataset=str(named), **columns)
    assert by_name.labels == by_files.labels == ["neg", "pos"]
    for a, b in ((by_name.train, by_files.train), (by_name.validation, by_files.validation)):
        assert (a.texts, a.labels) == (b.texts, b.labels)


def test_a_regression_label_reads_as_the_number_it_stores(tmp_path):
    features = datasets.Features({"sentence": datasets.Value("string"), "score": datasets.Value("float32")})
    split = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "score": [3.8, 0.0, 5.0]}, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "sts"))
    b = load(dataset=str(tmp_path / "sts"), label_column="score", task="regression")
    assert b.train.labels == [3.8, 0.0, 5.0] and b.task == "regression"


def test_bad_columns_and_texts_are_one_line_errors(tmp_path):
    datasets.DatasetDict({"train": pair_split(4), "validation": pair_split(2)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"missing column 'sentence'.*--text-column"):
        load(dataset=str(tmp_path / "d"))
    bad = pair_split(3).map(lambda r: {"sentence2": " " if r["idx"] == 1 else r["sentence2"]})
    datasets.DatasetDict({"train": bad, "validation": bad}).save_to_disk(str(tmp_path / "e"))
    with pytest.raises(DataError, match=r"train:2: empty text in column 'sentence2'"):
        load(dataset=str(tmp_path / "e"), text_column="sentence1", text_pair_column="sentence2")
    with pytest.raises(DataError, match="no such folder"):
        load(dataset=str(tmp_path / "missing" / "x"))


def test_a_hub_dataset_not_cached_with_the_hub_off_fails_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    code = cli_main(["train", "--glue", "mrpc", "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert "nyu-mll/glue (mrpc) is not in the datasets cache" in err[0] and "HF_HUB_OFFLINE=1" in err[0]


def test_a_cached_hub_dataset_loads_with_the_hub_off(tmp_path, monkeypatch):
    # what a first, online run leaves in the datasets cache: <cache>/<org>___<name>/<config>/<version>/<hash>/
    source = tmp_path / "tiny"
    source.mkdir()
    pd.DataFrame({"sentence": ["good", "bad", "fine", "dull"], "label": [1, 0, 1, 0]}).to_parquet(
        source / "train.parquet"
    )
    pd.DataFrame({"sentence": ["ok", "meh"], "label": [1, 0]}).to_parquet(source / "validation.parquet")
    datasets.load_dataset(str(source), cache_dir=str(tmp_path / "build"))
    built = next(p for p in (tmp_path / "build" / "tiny" / "default" / "0.0.0").iterdir() if p.is_dir())
    cache = tmp_path / "cache"
    dest = cache / "org___tiny" / "pair" / "0.0.0" / built.name
    shutil.copytree(built, dest)
    info = json.loads((dest / "dataset_info.json").read_text())
    (dest / "dataset_info.json").write_text(json.dumps({**info, "config_name": "pair"}))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    b = load(dataset="org/tiny", dataset_config="pair")
    assert b.train.texts == ["good", "bad", "fine", "dull"] and b.validation.labels == [1, 0]
    assert Path(b.validation.path).name.endswith("validation")

"""``loralab table``: rows read from run directories (nothing typed by hand), Markdown and CSV."""

from __future__ import annotations

import csv
import io
import json

import loralab
from conftest import tiny_run_config
from loralab.cli import main as cli_main
from loralab.evaluation.table import md_cell, settings_of


def test_table_rows_come_from_the_run_directories(tiny_models, tiny_data, tmp_path, capsys):
    a = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "lora-r4", epochs=2)).run_dir
    b = loralab.train(
        tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "head", method="head", lr=1e-2)
    ).run_dir
    assert cli_main(["table", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| run | method | settings |") and len(lines) == 4
    ra = json.loads((a / "results.json").read_text())
    shown = "" if ra["precision"] == "fp32" else f", {ra['precision']}"  # what `auto` trained in, unless fp32
    assert lines[2].startswith(f"| lora-r4 | lora | r 4, α 8, all-linear, lr 0.0005{shown} |")
    assert f"| {ra['validation']['accuracy']:.4f} |" in lines[2] and f"| {ra['params']['trainable']:,} |" in lines[2]
    assert "| 2 (" in lines[2] and "| 1 x " in lines[2]
    assert lines[3].startswith(f"| head | head | lr 0.01{shown} |")
    assert cli_main(["table", "--csv", str(a)]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["test acc"] == f"{ra['test']['accuracy']:.4f}"


def test_table_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert cli_main(["table", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("loralab: error:")


def test_markdown_cells_escape_pipes_and_flatten_newlines():
    assert md_cell("a|b\nc") == "a\\|b c"
    assert md_cell(3) == "3"


def test_settings_name_a_dropout_other_than_the_default():
    config = {
        "method": {"method": "lora", "rank": 32, "alpha": 64.0, "target_modules": ["all-linear"], "dropout": 0.117026},
        "train": {"seed": 1},
        "data": {},
    }
    assert settings_of(config, 7.919e-4) == "r 32, α 64, all-linear, dropout 0.117, lr 0.0007919, seed 1"
    config["method"]["dropout"] = 0.1
    assert settings_of(config, 5e-4) == "r 32, α 64, all-linear, lr 0.0005, seed 1"
    # what `auto` resolved to, as results.json records it, is shown; fp32 is not
    assert settings_of(config, 5e-4, "bf16") == "r 32, α 64, all-linear, lr 0.0005, bf16, seed 1"
    assert settings_of(config, 5e-4, "fp32") == "r 32, α 64, all-linear, lr 0.0005, seed 1"


def test_settings_name_the_lora_variant_and_the_vector_methods_rank():
    lora = {"method": "lora", "rank": 16, "alpha": 32.0, "target_modules": ["all-linear"], "dora": True}
    config = {"method": {**lora, "init": "pissa", "lora_plus_ratio": 16.0}, "train": {"seed": 42}, "data": {}}
    assert settings_of(config, 1e-3) == "r 16, α 32, all-linear, DoRA, init pissa, LoRA+ ×16, lr 0.001"
    config["method"] = {"method": "adalora", "rank": 12, "target_rank": 8}
    assert settings_of(config, None) == "r 12→8"
    config["method"] = {"method": "vera", "rank": 256, "layers": "top2"}
    assert settings_of(config, None) == "r 256, layers top2"

"""Big models (models/precision.py): --torch-dtype, --quantize (refused off CUDA; the bitsandbytes
config it would load with), --gradient-checkpointing; and a checkpoint whose head has another
number of labels gets a new head (models/backbones.build_model)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import loralab
from conftest import synthetic_rows, tiny_run_config, write_tsv
from loralab.errors import ConfigError
from loralab.models import precision
from loralab.models.precision import check_big_model, load_kwargs, quantization_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 1)


def test_quantize_is_refused_off_cuda_in_one_line(tiny_models, tiny_data, tmp_path):
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "run", method="lora", quantize="4bit")
    with pytest.raises(ConfigError, match=r"^--quantize 4bit needs a CUDA GPU \(bitsandbytes\); this run is on cpu$"):
        loralab.train(cfg, command=[])
    assert not (tmp_path / "run").exists()


def test_quantize_refusals_name_the_extra_and_the_method(monkeypatch):
    real = precision.importlib.util.find_spec
    monkeypatch.setattr(
        precision.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"needs bitsandbytes: pip install 'loralab\[quantize\]'"):
        check_big_model(None, "8bit", "lora", CUDA)
    with pytest.raises(ConfigError, match="--method full trains the quantized weights"):
        check_big_model(None, "4bit", "full", CUDA)


def test_the_bitsandbytes_config_and_load_arguments():
    q4 = quantization_config("4bit", "fp16")
    assert (q4.load_in_4bit, q4.bnb_4bit_quant_type, q4.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert q4.bnb_4bit_compute_dtype == torch.float16
    assert quantization_config("4bit").bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit").load_in_8bit
    kwargs = load_kwargs("bf16", "4bit", CUDA)
    assert kwargs["dtype"] == torch.bfloat16 and kwargs["device_map"] == {"": 1}
    assert kwargs["quantization_config"].load_in_4bit
    assert load_kwargs(None, None) == {}
    assert load_kwargs("fp16", None) == {"dtype": torch.float16}


def test_half_precision_or_quantized_weights_need_a_method_that_leaves_them_frozen():
    with pytest.raises(ConfigError, match=r"^--torch-dtype bf16 is for a frozen backbone: --method full trains"):
        check_big_model("bf16", None, "full", CPU)
    with pytest.raises(ConfigError, match="--method bitfit"):
        check_big_model("fp16", None, "bitfit", CPU)
    check_big_model("bf16", None, "lora", CPU)
    check_big_model("fp32", None, "full", CPU)


@pytest.mark.parametrize(("method", "autocast"), [("lora", "fp32"), ("head", "fp32"), ("lora", "bf16")])
def test_a_bf16_backbone_trains_its_adapter_and_head_in_fp32(tiny_models, tiny_data, tmp_path, method, autocast):
    cfg = tiny_run_config(
        tiny_models["bert"], tiny_data, tmp_path / "run", method=method, torch_dtype="bf16", precision=autocast
    )
    result = loralab.train(cfg, command=[])
    dtypes = {(p.requires_grad, p.dtype) for p in result.model.parameters()}
    assert (True, torch.float32) in dtypes and (False, torch.bfloat16) in dtypes
    assert (True, torch.bfloat16) not in dtypes
    assert sum(map(sum, result.results["validation"]["confusion_matrix"])) == 32  # scored from the reload
    meta = json.loads((result.run_dir / "config.json").read_text())
    assert meta["config"]["model"]["torch_dtype"] == "bf16"


def test_gradient_checkpointing_changes_memory_not_results(tiny_models, tiny_data, tmp_path):
    runs = {}
    for ckpt in (None, True):
        cfg = tiny_run_config(
            tiny_models["bert"], tiny_data, tmp_path / str(ckpt), method="lora", epochs=2, gradient_checkpointing=ckpt
        )
        runs[ckpt] = loralab.train(cfg, command=[])
    assert runs[True].model.is_gradient_checkpointing and not runs[None].model.is_gradient_checkpointing
    a, b = runs[None].results["validation"], runs[True].results["validation"]
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["confusion_matrix"] == b["confusion_matrix"]


def test_a_two_label_checkpoint_trains_on_three_labels_with_a_new_head(tiny_models, tmp_path, caplog):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "two-labels"
    AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"], num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(folder)
    data = tmp_path / "data"
    data.mkdir()
    for i, split in enumerate(("train", "validation", "test")):
        rows = [(t, (y + k) % 3) for k, (t, y) in enumerate(synthetic_rows(24, i))]
        write_tsv(data / f"{split}.tsv", rows)
    cfg = tiny_run_config(folder, data, tmp_path / "run", method="lora", labels=["0", "1", "2"])
    with caplog.at_level(logging.INFO, logger="loralab.models.backbones"):
        result = loralab.train(cfg, command=[])
    lines = [r.getMessage() for r in caplog.records if "new 3-label head" in r.getMessage()]
    assert len(lines) >= 1 and "classifier.weight" in lines[0]
    assert result.model.config.num_labels == 3
    assert len(result.results["validation"]["confusion_matrix"]) == 3

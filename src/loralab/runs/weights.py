"""A run's trained weights: saved in its method's format, refused unless in safetensors, and read
back into a model (:func:`load_model`, the one way a model is built from a run directory)."""

from __future__ import annotations

import warnings
from pathlib import Path

from loralab.errors import RunDirError
from loralab.models.methods.adapter_format import ADAPTER_METHODS, ADAPTER_WEIGHTS
from loralab.runs.layout import ADAPTER_DIR, MODEL_DIR, TOKENIZER_DIR, WEIGHTS_FILE


def save_weights(model, method: str, run_dir: Path, tokenizer) -> None:
    """Write the trained weights in the method's format (see the module docstring)."""
    from safetensors.torch import save_file

    from loralab.models.backbones import quiet_transformers
    from loralab.models.description import describe
    from loralab.models.methods import save_adapter

    if method in ADAPTER_METHODS:
        # a peft adapter folder that loads onto the original base model: PiSSA/OLoRA as the plain LoRA
        # delta, AdaLoRA with the rank pattern in use (models.methods.save_adapter)
        with quiet_transformers():
            save_adapter(model, run_dir / ADAPTER_DIR)
    elif method == "full":
        with quiet_transformers():
            model.save_pretrained(run_dir / MODEL_DIR)
    else:
        heads = tuple(f"{h}." for h in describe(model).heads)
        tensors = {
            n: p.detach().cpu().contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad or n.startswith(heads)
        }
        save_file(tensors, str(run_dir / WEIGHTS_FILE), metadata={"method": method})
    tokenizer.save_pretrained(run_dir / TOKENIZER_DIR)


def require_safetensors(run_dir: Path, meta: dict) -> None:
    """Refuse a run whose trained weights are not in safetensors (nothing is ever unpickled)."""
    method = meta["config"]["method"]["method"]
    if method in ADAPTER_METHODS:
        needed = run_dir / ADAPTER_DIR / ADAPTER_WEIGHTS
        ok = needed.exists()
    elif method == "full":
        needed = run_dir / MODEL_DIR / "*.safetensors"
        ok = any((run_dir / MODEL_DIR).glob("*.safetensors"))
    else:
        needed = run_dir / WEIGHTS_FILE
        ok = needed.exists()
    if not ok:
        raise RunDirError(f"{needed}: not found (weights are only read from safetensors)")


def load_model(run_dir: Path, run_config: dict, merge: bool = True):
    """Rebuild a run's model from its directory: ``(model, tokenizer)``, in eval mode on CPU. The
    one way a model is built from a run directory (``predict``, ``serve``, ``export``, the
    predictions a run writes of itself).

    ``merge=True`` folds an adapter method's update (LoRA, DoRA, VeRA, (IA)³, AdaLoRA) into the
    backbone weights, so adapters cost nothing at inference.
    """
    from transformers import AutoModelForSequenceClassification

    from loralab.models.backbones import build_model, quiet_transformers, saved_tokenizer

    require_safetensors(run_dir, run_config)
    method = run_config["config"]["method"]["method"]
    label_names = run_config["label_names"]
    base = run_config["config"]["model"]["model"]
    tokenizer = saved_tokenizer(run_dir / TOKENIZER_DIR)
    if method == "full":
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(run_dir / MODEL_DIR, use_safetensors=True)
    elif method in ADAPTER_METHODS:
        model = lora_model(base, label_names, run_dir / ADAPTER_DIR, tokenizer.pad_token_id, merge=merge)
    else:
        from safetensors.torch import load_file

        model = build_model(base, label_names, tokenizer.pad_token_id)
        tensors = load_file(str(run_dir / WEIGHTS_FILE))
        missing = set(tensors) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RunDirError(f"{run_dir / WEIGHTS_FILE}: parameters not in the model: {sorted(missing)[:3]}")
        model.load_state_dict(tensors, strict=False)
    from loralab.models.pooling import apply_pooling

    pooling = run_config["config"]["model"].get("pooling")  # runs written before --pooling have none
    apply_pooling(model.get_base_model() if hasattr(model, "get_base_model") else model, pooling)
    return model.eval(), tokenizer


def lora_model(base: str, label_names: list[str], adapter_dir: Path, pad_token_id: int | None, merge: bool = True):
    """The backbone ``base`` with the peft adapter in ``adapter_dir`` (a run's ``adapter/`` or an
    adapter export; LoRA or any of :data:`ADAPTER_METHODS`: peft reads the kind from its config),
    merged into its weights unless ``merge=False``."""
    from peft import PeftModel

    from loralab.models.backbones import build_model, quiet_transformers
    from loralab.models.methods import merge_and_unload

    model = build_model(base, label_names, pad_token_id)
    with quiet_transformers(), warnings.catch_warnings():
        # AdaLoRA: peft reads its rank pattern (which singular values are kept) as LoRA's (ranks by
        # module name) too, finds no module of those names and says so; the pattern is applied all the same
        warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
        model = PeftModel.from_pretrained(model, adapter_dir)
    return merge_and_unload(model) if merge else model

"""A run's trained weights: saved in its method's format, refused unless in safetensors, and read
back into a model (:func:`load_model`, the one way a model is built from a run directory)."""

from __future__ import annotations

from pathlib import Path

from loralab.errors import RunDirError
from loralab.models.methods.adapter_format import ADAPTER_WEIGHTS
from loralab.runs.layout import ADAPTER_DIR, MODEL_DIR, TOKENIZER_DIR, WEIGHTS_FILE


def save_weights(model, method: str, run_dir: Path, tokenizer) -> None:
    """Write the trained weights in the method's format (see the module docstring)."""
    from safetensors.torch import save_file

    from loralab.models.backbones import head_module_names, quiet_transformers

    if method == "lora":
        # LoRA never trains the embeddings; saying so keeps peft from asking the hub whether the
        # base model (named by its hub id) has another vocabulary
        with quiet_transformers():
            model.save_pretrained(run_dir / ADAPTER_DIR, save_embedding_layers=False)
    elif method == "full":
        with quiet_transformers():
            model.save_pretrained(run_dir / MODEL_DIR)
    else:
        heads = tuple(f"{h}." for h in head_module_names(model))
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
    if method == "lora":
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

    ``merge=True`` folds LoRA into the backbone weights, so adapters cost nothing at inference.
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
    elif method == "lora":
        model = lora_model(base, label_names, run_dir / ADAPTER_DIR, tokenizer.pad_token_id, merge=merge)
    else:
        from safetensors.torch import load_file

        model = build_model(base, label_names, tokenizer.pad_token_id)
        tensors = load_file(str(run_dir / WEIGHTS_FILE))
        missing = set(tensors) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RunDirError(f"{run_dir / WEIGHTS_FILE}: parameters not in the model: {sorted(missing)[:3]}")
        model.load_state_dict(tensors, strict=False)
    return model.eval(), tokenizer


def lora_model(base: str, label_names: list[str], adapter_dir: Path, pad_token_id: int | None, merge: bool = True):
    """The backbone ``base`` with the peft adapter in ``adapter_dir`` (a run's ``adapter/`` or an
    adapter export), merged into its weights unless ``merge=False``."""
    from peft import PeftModel

    from loralab.models.backbones import build_model, quiet_transformers

    model = build_model(base, label_names, pad_token_id)
    with quiet_transformers():
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.merge_and_unload() if merge else model

"""LoRA and its variants: through peft (``--impl peft``, the default; ``--dora``, ``--rslora``,
``--init``) or loralab's own layer (``--impl scratch``), LoRA+'s parameter groups, and the adapter
folder a LoRA run is saved as.

Both impls produce a standard peft adapter on disk: ``adapter_config.json`` +
``adapter_model.safetensors``, with the classification head saved alongside
(``modules_to_save``) so that the adapter reloads with plain ``PeftModel.from_pretrained``.

PiSSA and OLoRA (``--init pissa``, ``pissa_niter_N``, ``olora``) start the adapter from the top of
each weight and take it out of the frozen weight (``W_res = W - s·B0·A0``), so the trained adapter
only fits that residual model. :func:`save_adapter` saves it, with peft's own conversion
(``path_initial_model_for_weight_conversion``), as the plain LoRA delta ``s·(B·A - B0·A0)`` of rank
2r: the run directory then reloads on the *original* base model, like any LoRA run.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from loralab.config import MethodConfig
from loralab.errors import ConfigError
from loralab.models.backbones import portable_name
from loralab.models.description import Backbone, describe

#: ``--init`` values that rewrite the frozen weights (saved as a plain LoRA delta, see the module docstring)
MUTATING_INITS = ("pissa", "olora")
#: The attribute of a peft model that holds its adapter as initialised (PiSSA/OLoRA only)
INITIAL_ADAPTER = "loralab_initial_adapter"


def placement(targets: list[str], layers: list[int] | None, family: Backbone, heads: list[str]) -> dict:
    """Where a peft adapter goes, as every peft config of loralab's spells it (LoRA, VeRA,
    AdaLoRA): its target modules, the layers (``--layers``), the family's weight layout, and the
    head trained and saved beside it."""
    return {
        "target_modules": targets,
        "layers_to_transform": layers,
        "layers_pattern": family.layers_pattern if layers is not None else None,
        "fan_in_fan_out": family.fan_in_fan_out,
        "modules_to_save": list(heads),
    }


def peft_config(family, cfg: MethodConfig, heads: list[str]):
    """The ``peft.LoraConfig`` equivalent of ``cfg`` for the backbone ``family`` (a :class:`Backbone`,
    or a model config, described on the meta device)."""
    from peft import LoraConfig

    from loralab.models.description import describe_config
    from loralab.models.methods import lora_settings

    if not isinstance(family, Backbone):  # a model config
        family = describe_config(family)
    targets, layers, _ = lora_settings(family, cfg)
    return LoraConfig(
        task_type="SEQ_CLS",
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        **placement(targets, layers, family, heads),
        bias="none",
        use_dora=bool(cfg.dora),
        use_rslora=bool(cfg.rslora),
        init_lora_weights=cfg.init if cfg.init is not None else True,
    )


def mutates_base(init: str | bool | None) -> bool:
    """Whether ``init`` (``--init`` or a saved ``init_lora_weights``) rewrites the frozen weights."""
    return isinstance(init, str) and init.split("_niter_")[0] in MUTATING_INITS


def inject_lora(model: nn.Module, cfg: MethodConfig, family: Backbone | None, heads: list[str]) -> nn.Module:
    family = family or describe(model)
    pconf = peft_config(family, cfg, heads)
    if cfg.impl == "scratch":
        from loralab.models.methods.scratch_lora import inject_scratch_lora

        return inject_scratch_lora(model, pconf)
    from peft import get_peft_model

    if cfg.init == "olora" and family.fan_in_fan_out:
        raise ConfigError(
            f"--init olora: peft's OLoRA initialisation does not handle {family.name}'s transposed (Conv1D) "
            "weights (its A and B come out with the wrong shapes); use --init pissa"
        )
    # `loralab inspect` builds the model without weights: the adapters then live on the meta device too,
    # where the initialisations that read the weights (PiSSA, OLoRA, MiCA) only shape them
    meta = any(p.is_meta for p in model.parameters())
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            peft_model = get_peft_model(model, pconf)
    except ValueError as e:
        raise ConfigError(f"--target-modules {','.join(pconf.target_modules)}: {str(e).splitlines()[0]}") from None
    make_portable(peft_model.peft_config["default"], heads)
    if mutates_base(cfg.init) and not meta:
        from peft.utils import get_peft_model_state_dict

        initial = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
        setattr(peft_model, INITIAL_ADAPTER, {k: v.detach().to("cpu", copy=True) for k, v in initial.items()})
    return peft_model


def make_portable(pconf, heads: list[str]) -> None:
    """What the saved ``adapter_config.json`` says, made true on any machine: the base model by its
    hub id (not this machine's folder), and ``modules_to_save`` exactly this family's head.

    peft's ``PeftModelForSequenceClassification`` appends ``classifier`` and ``score`` to
    ``modules_to_save`` whatever the model (so a BERT adapter named GPT-2's ``score`` and listed
    ``classifier`` twice); the modules are already wrapped when this runs, so only the record changes.
    """
    pconf.modules_to_save = list(dict.fromkeys(heads))
    pconf.base_model_name_or_path = portable_name(pconf.base_model_name_or_path)


def is_lora_b(name: str) -> bool:
    """A LoRA B matrix: peft's ``….lora_B.<adapter>.weight`` or the scratch layer's ``….lora_B``."""
    return "lora_B" in name.split(".")


def save_lora_adapter(model: nn.Module, directory: Path) -> None:
    """Write a LoRA model (either impl) as a peft adapter folder; PiSSA/OLoRA as the plain LoRA delta."""
    initial = getattr(model, INITIAL_ADAPTER, None)
    if initial is None:
        model.save_pretrained(directory, save_embedding_layers=False)
        return
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from loralab.models.methods.adapter_format import ADAPTER_WEIGHTS

    with tempfile.TemporaryDirectory(prefix="loralab-initial-") as tmp:
        start = Path(tmp) / "initial"  # peft loads it as an adapter named after its folder
        start.mkdir()
        model.peft_config["default"].save_pretrained(str(start))
        save_file(initial, str(start / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        with warnings.catch_warnings():  # peft loads the initial adapter beside the PiSSA one, and warns
            warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
            model.save_pretrained(
                directory, save_embedding_layers=False, path_initial_model_for_weight_conversion=str(start)
            )
    # peft's conversion keeps only the lora_A/lora_B tensors: the head (modules_to_save) goes back in
    weights = Path(directory) / ADAPTER_WEIGHTS
    converted = load_file(str(weights))
    trained = get_peft_model_state_dict(model, save_embedding_layers=False)
    missing = {k: v.detach().cpu().contiguous() for k, v in trained.items() if k not in converted}
    save_file({**converted, **missing}, str(weights), metadata={"format": "pt"})

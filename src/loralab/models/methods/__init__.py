"""Fine-tuning methods: each decides which parameters train (and may add adapters).

| method     | trains                                                        |
|------------|---------------------------------------------------------------|
| ``none``     | nothing (evaluates the untrained model)                      |
| ``head``     | the classification head only (``Backbone.heads``, or ``--head classifier``) |
| ``lora``     | LoRA adapters on the target modules + the head (``lora.py``: DoRA, rsLoRA, the initialisations, LoRA+) |
| ``full``     | every parameter                                               |
| ``prelayer`` | token and position embeddings + the head                      |
| ``bitfit``   | every bias of the model + the head                            |
| ``ia3``      | (IA)³ scaling vectors + the head (``vectors.py``)             |
| ``vera``     | VeRA's scaling vectors over shared random matrices + the head (``vectors.py``) |
| ``adalora``  | AdaLoRA's SVD-form adapters, whose rank budget shrinks as training goes + the head (``adalora.py``) |

:func:`apply_method` returns the model to train (for the adapter methods a peft model),
:func:`param_table` reports exactly which parameters train, :func:`attach_training_hooks` gives a
method what it needs from the optimizer (AdaLoRA's schedule) and :func:`save_adapter` writes an
adapter method's model as a peft adapter folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from loralab.config import MethodConfig
from loralab.errors import ConfigError
from loralab.models.backbones import parse_layers
from loralab.models.description import Backbone, describe
from loralab.models.methods.adapter_format import ADAPTER_METHODS


def apply_method(
    model: nn.Module, cfg: MethodConfig, backbone: Backbone | None = None, head: str | None = None
) -> nn.Module:
    """Freeze/unfreeze parameters (and inject adapters) for ``cfg.method``; returns the model to train.
    ``backbone`` is the model's description (:func:`~loralab.models.description.describe`); ``head``
    is ``--head`` (:func:`chosen_heads`)."""
    family = backbone or describe(model)
    heads = chosen_heads(family, head)
    if cfg.method == "lora":
        from loralab.models.methods.lora import inject_lora

        return inject_lora(model, cfg, family, heads)
    if cfg.method in ADAPTER_METHODS:
        return _inject_peft(model, cfg, family, heads)
    for p in model.parameters():
        p.requires_grad_(cfg.method == "full")
    if cfg.method in ("head", "prelayer", "bitfit"):
        for name in heads:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
    if cfg.method == "prelayer":
        for module in embedding_modules(model, family):
            for p in module.parameters():
                p.requires_grad_(True)
    if cfg.method == "bitfit":  # BitFit (Ben Zaken et al., 2022): every bias term, LayerNorm's too
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                p.requires_grad_(True)
    return model


def chosen_heads(family: Backbone, head: str | None = None) -> list[str]:
    """The head modules that train in full for ``--head``: ``family`` (None) the family's whole head,
    ``classifier`` peft's default for sequence classification, the final ``classifier``/``score``
    module alone (BERT's pooler dense then stays frozen, as the LoRA papers count it)."""
    if head in (None, "family"):
        return list(family.heads)
    if not family.peft_heads:
        raise ConfigError(f"--head classifier: {family.name} has no classifier or score module")
    return list(family.peft_heads)


def _inject_peft(model: nn.Module, cfg: MethodConfig, family: Backbone, heads: list[str]) -> nn.Module:
    """VeRA, (IA)³ or AdaLoRA through peft, the head trained in full (``modules_to_save``)."""
    from peft import get_peft_model

    from loralab.models.methods.lora import make_portable

    targets, layers, _ = lora_settings(family, cfg)
    if cfg.method == "vera":
        from loralab.models.methods.vectors import vera_config

        pconf = vera_config(targets, layers, family, cfg, heads)
    elif cfg.method == "ia3":
        from loralab.models.methods.vectors import ia3_config

        pconf = ia3_config(family, cfg, layers, heads)
    else:
        from loralab.models.methods.adalora import adalora_config

        pconf = adalora_config(targets, layers, family, cfg, heads)
    try:
        peft_model = get_peft_model(model, pconf)
    except ValueError as e:
        raise ConfigError(f"--method {cfg.method}: {str(e).splitlines()[0]}") from None
    make_portable(peft_model.peft_config["default"], heads)
    for name, p in peft_model.named_parameters():
        if "ranknum" in name.split("."):  # AdaLoRA's rank counter (moving it to meta makes it trainable)
            p.requires_grad_(False)
    return peft_model


def attach_training_hooks(model: nn.Module, optimizer, total_steps: int) -> None:
    """What a method needs from the optimizer, attached once before training: AdaLoRA's rank
    schedule over ``total_steps`` optimizer steps (``adalora.AdaLoraSchedule``); nothing for the others."""
    configs = getattr(model, "peft_config", None)
    if isinstance(configs, dict) and getattr(configs.get("default"), "peft_type", None) == "ADALORA":
        from loralab.models.methods.adalora import AdaLoraSchedule

        AdaLoraSchedule(model, optimizer, total_steps)


def save_adapter(model: nn.Module, directory: Path) -> None:
    """Write an adapter method's model (:data:`ADAPTER_METHODS`) as a peft adapter folder that
    ``PeftModel.from_pretrained`` loads onto the original base model: PiSSA/OLoRA as the plain LoRA
    delta, AdaLoRA with the rank pattern of its singular values in use. The embeddings never train
    (saying so keeps peft from asking the hub whether the base model has another vocabulary)."""
    from loralab.models.methods.adalora import saved_rank_pattern, tuner_of
    from loralab.models.methods.lora import save_lora_adapter

    if tuner_of(model) is not None:
        with saved_rank_pattern(model):
            model.save_pretrained(directory, save_embedding_layers=False)
    else:  # LoRA (either impl), VeRA, (IA)³
        save_lora_adapter(model, directory)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """An adapter method's peft model with its update folded into the base weights: the plain
    transformers model. The trained head copies (``modules_to_save``) are put in place first: peft's
    generic unloading, which VeRA and (IA)³ use, copies a ``weight`` onto each unwrapped module and
    fails on a head that has none (RoBERTa's ``classifier``: ``dense`` + ``out_proj``)."""
    from peft.utils.other import ModulesToSaveWrapper

    inner = model.get_base_model()
    for name, module in list(inner.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            trained = (
                module.modules_to_save[module.active_adapter] if module.active_adapters else module.original_module
            )
            setattr(inner.get_submodule(parent) if parent else inner, child, trained)
    return model.merge_and_unload()


def embedding_modules(model: nn.Module, family: Backbone) -> list[nn.Module]:
    """Token and position embeddings of the backbone (the token embeddings alone where positions are
    rotary or relative: no position embedding to train)."""
    token = model.get_input_embeddings()
    if family.position_embeddings is None:
        return [token]
    position = [m for n, m in model.named_modules() if n.split(".")[-1] == family.position_embeddings]
    if len(position) != 1 or not isinstance(position[0], nn.Embedding):
        raise ConfigError(f"--method prelayer: cannot find the position embedding of {family.name}")
    return [token, position[0]]


def lora_settings(family: Backbone, cfg: MethodConfig) -> tuple[list[str], list[int] | None, Backbone]:
    """Target module names and layer indices for LoRA on the backbone ``family`` (shared by both impls)."""
    return resolve_targets(cfg.target_modules, family), parse_layers(cfg.layers, family.n_layers), family


def resolve_targets(names: list[str] | None, family) -> list[str]:
    """Module names for ``--target-modules``: the presets ``all-linear`` and ``qv`` become this
    family's names; other names pass through. ``None`` is what runs written before ``all-linear``
    became the default recorded for the family default of the time, ``qv``."""
    names = list(names) if names else ["qv"]
    if names == ["all-linear"]:
        return list(family.linear_targets)
    if names == ["qv"]:
        if not family.qv_targets:
            raise ConfigError(
                f"--target-modules qv: no query/value layers recognised in {family.name} (its linear layers: "
                f"{', '.join(family.linear_targets)}); name them with --target-modules"
            )
        return list(family.qv_targets)
    return names


# ---------------------------------------------------------------------------------------------
# Parameter accounting
# ---------------------------------------------------------------------------------------------

#: ``lora``: LoRA's matrices (DoRA's magnitudes, AdaLoRA's singular values and rank counters too);
#: ``adapter``: the vectors of VeRA and (IA)³
GROUP_ORDER = ("embeddings", "layers", "lora", "adapter", "head", "other")


@dataclass
class ParamGroup:
    name: str
    total: int = 0
    trainable: int = 0


@dataclass
class ParamTable:
    groups: list[ParamGroup]
    head_modules: list[str] = field(default_factory=list)  # what the group "head" holds
    backbone: Backbone | None = None  # the model's description (``loralab inspect`` shows it)

    @property
    def total(self) -> int:
        return sum(g.total for g in self.groups)

    @property
    def trainable(self) -> int:
        return sum(g.trainable for g in self.groups)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "trainable_params": self.trainable,
            "total_params": self.total,
            "trainable_percent": self.trainable_percent,
            "groups": {g.name: {"total": g.total, "trainable": g.trainable} for g in self.groups},
            "head_modules": list(self.head_modules),
        }

    def format(self) -> str:
        rows = [("group", "total", "trainable", "trainable %")]
        for g in self.groups:
            pct = 100.0 * g.trainable / g.total if g.total else 0.0
            rows.append((g.name, f"{g.total:,}", f"{g.trainable:,}", f"{pct:.2f}"))
        rows.append(("all", f"{self.total:,}", f"{self.trainable:,}", f"{self.trainable_percent:.4f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        if self.head_modules:
            lines.append(f"head: {', '.join(self.head_modules)}")
        return "\n".join(lines)


def _group_of(name: str, heads: list[str], layers_pattern: str) -> str:
    parts = name.split(".")
    if any(p.startswith("lora_") or p == "ranknum" for p in parts):
        return "lora"
    if any(p.startswith(("vera_", "ia3_")) for p in parts):
        return "adapter"
    # peft wraps the model as base_model.model.<name>; strip that prefix
    if parts[:2] == ["base_model", "model"]:
        parts = parts[2:]
    dotted = ".".join(parts)
    if any(dotted.startswith(f"{h}.") for h in heads):
        return "head"
    if "embeddings" in parts or parts[-2:-1] in (["wte"], ["wpe"]) or any("embed" in p for p in parts):
        return "embeddings"
    if layers_pattern in parts:
        return "layers"
    return "other"


def param_table(model: nn.Module, heads: list[str] | None = None) -> ParamTable:
    """Total and trainable parameters by group, counted over the model as built.

    With ``--impl peft`` this includes peft's frozen copy of the head (``original_module``), so the
    figures are those of peft's ``print_trainable_parameters``; ``--impl scratch`` trains the head
    in place, so its trainable count is the same and its total is smaller by the head's size."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = describe(base)
    heads = heads if heads is not None else list(family.heads)
    groups = {g: ParamGroup(g) for g in GROUP_ORDER}
    for name, p in model.named_parameters():
        g = groups[_group_of(name, heads, family.layers_pattern)]
        g.total += p.numel()
        if p.requires_grad:
            g.trainable += p.numel()
    return ParamTable([g for g in groups.values() if g.total], list(heads), family)

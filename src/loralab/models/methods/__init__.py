"""Fine-tuning methods: each decides which parameters train (and may add adapters).

| method     | trains                                                        |
|------------|---------------------------------------------------------------|
| ``none``     | nothing (evaluates the untrained model)                      |
| ``head``     | the classification head only (``models.backbones.head_module_names``) |
| ``lora``     | LoRA adapters on the target modules + the head                |
| ``full``     | every parameter                                               |
| ``prelayer`` | token and position embeddings + the head                      |

:func:`apply_method` returns the model to train (for ``lora`` a peft model) and
:func:`param_table` reports exactly which parameters train.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from loralab.config import MethodConfig
from loralab.errors import ConfigError
from loralab.models.backbones import Family, family_of, head_module_names, num_layers, parse_layers


def apply_method(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    """Freeze/unfreeze parameters (and inject adapters) for ``cfg.method``; returns the model to train."""
    family = family_of(model.config)
    heads = head_module_names(model)
    if cfg.method == "lora":
        from loralab.models.methods.lora import inject_lora

        return inject_lora(model, cfg, family, heads)
    for p in model.parameters():
        p.requires_grad_(cfg.method == "full")
    if cfg.method in ("head", "prelayer"):
        for name in heads:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
    if cfg.method == "prelayer":
        for module in embedding_modules(model, family):
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def embedding_modules(model: nn.Module, family: Family) -> list[nn.Module]:
    """Token and position embeddings of the backbone."""
    token = model.get_input_embeddings()
    position = [m for n, m in model.named_modules() if n.split(".")[-1] == family.position_embeddings]
    if len(position) != 1 or not isinstance(position[0], nn.Embedding):
        raise ConfigError(f"--method prelayer: cannot find the position embedding of {family.name}")
    return [token, position[0]]


def lora_settings(model_config, cfg: MethodConfig) -> tuple[list[str], list[int] | None, Family]:
    """Target module names and layer indices for LoRA on this model (shared by both impls)."""
    family = family_of(model_config)
    return resolve_targets(cfg.target_modules, family), parse_layers(cfg.layers, num_layers(model_config)), family


def resolve_targets(names: list[str] | None, family: Family) -> list[str]:
    """Module names for ``--target-modules``: the presets ``all-linear`` and ``qv`` become this
    family's names; other names pass through. ``None`` is what runs written before ``all-linear``
    became the default recorded for the family default of the time, ``qv``."""
    names = list(names) if names else ["qv"]
    if names == ["all-linear"]:
        return list(family.linear_targets)
    if names == ["qv"]:
        return list(family.qv_targets)
    return names


# ---------------------------------------------------------------------------------------------
# Parameter accounting
# ---------------------------------------------------------------------------------------------

GROUP_ORDER = ("embeddings", "layers", "lora", "head", "other")


@dataclass
class ParamGroup:
    name: str
    total: int = 0
    trainable: int = 0


@dataclass
class ParamTable:
    groups: list[ParamGroup]
    head_modules: list[str] = field(default_factory=list)  # what the group "head" holds

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
    if any(p.startswith("lora_") for p in parts):
        return "lora"
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
    heads = heads if heads is not None else head_module_names(base)
    family = family_of(base.config)
    groups = {g: ParamGroup(g) for g in GROUP_ORDER}
    for name, p in model.named_parameters():
        g = groups[_group_of(name, heads, family.layers_pattern)]
        g.total += p.numel()
        if p.requires_grad:
            g.trainable += p.numel()
    return ParamTable([g for g in groups.values() if g.total], list(heads))

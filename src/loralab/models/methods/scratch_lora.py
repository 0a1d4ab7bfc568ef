"""loralab's own LoRA (``--impl scratch``): the layer, its injection into a model, and the adapter
files, interchangeable with peft's.

* :class:`LoRALinear` — the maths: a frozen linear layer plus a trainable low-rank update.
* :func:`inject_scratch_lora` — freeze the model, swap ``LoRALinear`` in where a ``peft.LoraConfig``
  says, make the classification head trainable; returns a :class:`ScratchLoraModel`.
* :meth:`ScratchLoraModel.save_pretrained` / :func:`load_scratch_adapter` — a standard peft
  adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, same keys and shapes as
  peft writes), so an adapter trained by either impl loads into the other.

Both impls adapt exactly the same modules: the target modules are matched by peft's own
``check_target_module_exists`` on the same ``LoraConfig``, and the head is matched by peft's rule
for ``modules_to_save``. Supported: ``nn.Linear`` and GPT-2's ``Conv1D`` targets, ``r``,
``lora_alpha``, ``lora_dropout``, ``use_rslora``, ``target_modules``, ``exclude_modules``,
``layers_to_transform``/``layers_pattern``, ``modules_to_save``. Other peft options (DoRA, LoRA
bias, rank/alpha patterns, other initialisations...) are refused with an error.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.errors import ConfigError, RunDirError
from loralab.models.methods.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PREFIX

#: Module names peft adds to ``modules_to_save`` for ``task_type="SEQ_CLS"``
#: (``PeftModelForSequenceClassification``); mirrored so the same modules match.
SEQ_CLS_HEADS = ["classifier", "score"]


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (LoRA; Hu et al. 2021,
    "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685)::

        y = W₀x + b + (α/r) · B A dropout(x)        A: [r, in], B: [out, r]

    ``A`` starts Kaiming-uniform and ``B`` at zero (peft's initialisation), so the layer equals
    the base layer until ``B`` moves. With ``use_rslora`` the scale is α/√r instead of α/r.

    The base layer is wrapped by *composition* (kept, frozen, as ``self.base_layer``) rather than
    subclassed: the same class then adapts both ``nn.Linear`` (weight ``[out, in]``) and GPT-2's
    transformers ``Conv1D`` (weight stored transposed, ``[in, out]``); the base layer's own forward
    is reused as is; and :meth:`ScratchLoraModel.merge_and_unload` gets the original module back by
    unwrapping it. Its parameter names (``….base_layer.weight``) are also peft's.

    :meth:`merge` folds ``(α/r)·BA`` into the base weight (for inference) and :meth:`unmerge` takes
    it out again. Merging happens only when asked: ``train()``/``eval()`` never merge (unlike
    loralib). While merged the forward is the base layer alone, so outputs are the same either way;
    call :meth:`unmerge` before training again.
    """

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False
    ) -> None:
        super().__init__()
        if isinstance(base_layer, Conv1D):
            in_features, out_features = base_layer.weight.shape
            self.fan_in_fan_out = True  # weight is [in, out]
        elif isinstance(base_layer, nn.Linear):
            in_features, out_features = base_layer.in_features, base_layer.out_features
            self.fan_in_fan_out = False
        else:
            raise TypeError(f"LoRALinear wraps nn.Linear or transformers' Conv1D, not {type(base_layer).__name__}")
        if r < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {r}")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.in_features, self.out_features, self.r, self.alpha = in_features, out_features, r, alpha
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        w = base_layer.weight
        # as peft: adapters of a half-precision layer are kept in float32 (stable updates)
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(out_features, r, dtype=dtype, device=w.device))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ Kaiming-uniform (as ``nn.Linear`` and peft), B = 0: the update starts at zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:  # the update is already in the base weight
            return result
        a = self.lora_A
        update = F.linear(F.linear(self.lora_dropout(x.to(a.dtype)), a), self.lora_B) * self.scaling
        return result + update.to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``(α/r)·BA`` laid out like the base weight (transposed for ``Conv1D``)."""
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update to the base weight (no-op if already merged)."""
        if not self.merged:
            w = self.base_layer.weight
            w += self.delta_weight().to(w.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again (no-op if not merged)."""
        if self.merged:
            w = self.base_layer.weight
            w -= self.delta_weight().to(w.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"alpha={self.alpha:g}, merged={self.merged}"
        )


class ScratchLoraModel(nn.Module):
    """A Hugging Face model with :class:`LoRALinear` layers swapped in; forwards to it.

    The model sits at ``self.base_model["model"]``, so parameter names are peft's
    ``base_model.model.<name in the HF model>``: loralab's parameter table groups both impls
    alike, and a LoRA layer ``N`` is saved as peft's ``N.lora_A.weight`` / ``N.lora_B.weight``.

    Parameter counts versus peft: the trainable count is identical (same adapters, same head). The
    *total* is smaller by exactly the head's size (e.g. 66 for the tiny BERT, 1,538 for
    BERT-base with 2 labels): peft trains a copy of the head (``modules_to_save.default``) and keeps
    the original frozen beside it (``original_module``), while this class trains the head in place.
    """

    def __init__(self, model: nn.Module, lora_config: LoraConfig, head_names: list[str]) -> None:
        super().__init__()
        self.base_model = nn.ModuleDict({"model": model})
        self.lora_config = lora_config
        self.head_names = list(head_names)  # names, in the HF model, of the modules trained in full

    @property
    def config(self):
        return self.get_base_model().config

    def get_base_model(self) -> nn.Module:
        return self.base_model["model"]

    def forward(self, *args, **kwargs):
        return self.get_base_model()(*args, **kwargs)

    def lora_layers(self) -> dict[str, LoRALinear]:
        """The LoRA layers by name in the HF model."""
        return {n: m for n, m in self.get_base_model().named_modules() if isinstance(m, LoRALinear)}

    def merge(self) -> None:
        for layer in self.lora_layers().values():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.lora_layers().values():
            layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """Fold every update into its base weight and put the plain base layers back: returns the
        HF model (this wrapper is spent afterwards)."""
        model = self.get_base_model()
        for name, layer in self.lora_layers().items():
            layer.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.base_layer)
        return model

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of a peft adapter file, under peft's key names: every LoRA A/B, and the
        head modules' state as ``base_model.model.<head>.<param>``."""
        out: dict[str, torch.Tensor] = {}
        model = self.get_base_model()
        for name, layer in self.lora_layers().items():
            out[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A
            out[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B
        for head in self.head_names:
            for key, t in model.get_submodule(head).state_dict().items():
                out[f"{PREFIX}{head}.{key}"] = t
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save_pretrained(self, save_directory: str | Path, **_ignored) -> None:
        """Write a standard peft adapter folder (``PeftModel.from_pretrained`` loads it)."""
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        conf = copy.deepcopy(self.lora_config)
        conf.inference_mode = True  # as peft writes it
        conf.save_pretrained(str(save_directory))
        save_file(self.adapter_state_dict(), str(save_directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def inject_scratch_lora(model: nn.Module, pconf: LoraConfig) -> ScratchLoraModel:
    """Freeze ``model``, wrap the modules that ``pconf`` targets in :class:`LoRALinear` and make
    the head modules (``pconf.modules_to_save``) trainable. ``pconf`` is not modified."""
    from loralab.models.backbones import portable_name

    conf = copy.deepcopy(pconf)
    # as peft's get_peft_model: the base model's name ("" for a model built from a config → None),
    # by its hub id where it has one (as methods.lora.make_portable does for peft)
    conf.base_model_name_or_path = portable_name(getattr(model.config, "_name_or_path", None) or None)
    return _inject(model, conf, trainable=True)


def load_scratch_adapter(model: nn.Module, adapter_dir: str | Path, is_trainable: bool = False) -> ScratchLoraModel:
    """Load a peft-format LoRA adapter (written by either impl) into ``model`` as scratch LoRA.

    As ``PeftModel.from_pretrained``: the result is frozen and in eval mode unless ``is_trainable``.
    """
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.exists():
            raise RunDirError(f"{path}: not found (a peft adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    try:
        peft_type = json.loads(config_path.read_text(encoding="utf-8")).get("peft_type")
    except json.JSONDecodeError as e:
        raise RunDirError(f"{config_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if peft_type != "LORA":
        raise RunDirError(f"{config_path}: a {peft_type} adapter, not LoRA")
    conf = LoraConfig.from_pretrained(str(adapter_dir))
    wrapper = _inject(model, conf, trainable=is_trainable)

    tensors = load_file(str(weights_path))
    expected = wrapper.adapter_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"not in the model {unexpected[:3]}"
        raise RunDirError(f"{weights_path}: does not fit this model and {ADAPTER_CONFIG} ({what})")
    base = wrapper.get_base_model()
    with torch.no_grad():
        for key, value in tensors.items():
            name = key.removeprefix(PREFIX)
            if name.endswith((".lora_A.weight", ".lora_B.weight")):
                name = name.removesuffix(".weight")  # peft's lora_A is a Linear; ours is the matrix
            module, _, leaf = name.rpartition(".")
            target = getattr(base.get_submodule(module), leaf)  # a parameter or a buffer
            if target.shape != value.shape:
                raise RunDirError(
                    f"{weights_path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                )
            target.copy_(value)
    if not is_trainable:
        wrapper.eval()
    return wrapper


# ---------------------------------------------------------------------------------------------
# Injection
# ---------------------------------------------------------------------------------------------

#: peft options this implementation does not have: each must be off (falsy).
UNSUPPORTED = (
    "use_dora",
    "lora_bias",
    "rank_pattern",
    "alpha_pattern",
    "layer_replication",
    "target_parameters",
    "trainable_token_indices",
    "use_qalora",
    "alora_invocation_tokens",
    "arrow_config",
    "use_bdlora",
    "velora_config",
    "monteclora_config",
    "kasa_config",
    "ensure_weight_tying",
)


def _inject(model: nn.Module, conf: LoraConfig, trainable: bool) -> ScratchLoraModel:
    _check_supported(conf)
    recorded = list(dict.fromkeys(conf.modules_to_save or []))  # saved as given (methods.lora.make_portable)
    if conf.task_type == "SEQ_CLS":  # what PeftModelForSequenceClassification does to the config
        conf.modules_to_save = [*(conf.modules_to_save or []), *SEQ_CLS_HEADS]
    model.requires_grad_(False)

    # peft's own matcher: target_modules (names or regex), exclude_modules, layers_to_transform/
    # layers_pattern, and no adapter inside a modules_to_save module.
    targets = [name for name, _ in model.named_modules() if name and check_target_module_exists(conf, name)]
    if not targets:
        note = f" in layers {conf.layers_to_transform}" if conf.layers_to_transform is not None else ""
        raise ConfigError(f"--target-modules {_names(conf.target_modules)}: no module of the model matches{note}")
    for name in targets:
        base = model.get_submodule(name)
        if not isinstance(base, (nn.Linear, Conv1D)):
            raise ConfigError(
                f"--target-modules {_names(conf.target_modules)}: {name} is a {type(base).__name__}; "
                "--impl scratch adapts Linear (and GPT-2 Conv1D) layers only (use --impl peft)"
            )
        # peft corrects fan_in_fan_out to the layer type (and saves the corrected value)
        conf.fan_in_fan_out = isinstance(base, Conv1D)
        layer = LoRALinear(base, conf.r, conf.lora_alpha, conf.lora_dropout, conf.use_rslora)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    if not trainable:
        model.requires_grad_(False)

    # peft's rule for modules_to_save: every module whose name *ends with* an entry (so
    # "classifier" also catches DistilBERT's "pre_classifier"); trained in place, not copied.
    save = list(conf.modules_to_save or [])
    heads = [n for n, _ in model.named_modules() if n and any(n.endswith(s) for s in save)]
    heads = [n for n in heads if not any(n.startswith(f"{h}.") for h in heads)]  # outermost only
    for name in heads:
        model.get_submodule(name).requires_grad_(trainable)
    conf.modules_to_save = recorded or None
    return ScratchLoraModel(model, conf, heads)


def _check_supported(conf: LoraConfig) -> None:
    used = [name for name in UNSUPPORTED if getattr(conf, name, None)]
    if conf.bias != "none":
        used.append(f"bias={conf.bias}")
    if conf.init_lora_weights is not True:
        used.append(f"init_lora_weights={conf.init_lora_weights}")
    if used:
        raise ConfigError(f"--impl scratch does not implement the peft option(s) {', '.join(used)} (use --impl peft)")


def _names(targets) -> str:
    return targets if isinstance(targets, str) else ",".join(sorted(targets))

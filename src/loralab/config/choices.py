"""The closed sets of option values and every default that depends on the method (learning rates,
target presets), plus the field helper that gives each option its help text."""

from __future__ import annotations

from dataclasses import field
from typing import Any

METHODS = ("head", "lora", "full", "prelayer", "bitfit", "ia3", "vera", "adalora", "none")
#: ``--init`` values: peft's ``init_lora_weights`` initialisations that need no data (``pissa_niter_N``
#: too: PiSSA by a fast randomised SVD of N subspace iterations). Unset: peft's default (A Kaiming-uniform,
#: B zero). PiSSA and OLoRA move the top of each weight into the adapter; their run directories hold
#: the plain LoRA delta for the original weights (loralab.models.methods.lora.save_adapter).
LORA_INITS = ("gaussian", "pissa", "olora", "orthogonal", "mica")
IMPLS = ("peft", "scratch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Default learning rate per method, used when ``lr`` is not given. head, lora, full and prelayer were
#: chosen on MiniLM-L6 / SST-2 (docs/training.md, "Default hyper-parameters"): frozen-backbone methods
#: tolerate (and need) a large step; full fine-tuning of every weight needs a small one.
DEFAULT_LR: dict[str, float] = {
    "head": 1e-2,
    "lora": 5e-4,
    "full": 5e-5,
    "prelayer": 3e-4,
    # the published recipes (sources in docs/training.md, "Methods", beside a short SST-2 search's rates)
    "bitfit": 1e-3,  # BitFit (Ben Zaken et al., 2022): the top of the 1e-4..1e-3 it searched on GLUE
    "ia3": 3e-3,  # (IA)^3 (Liu et al., 2022, T-Few): 3e-3
    "vera": 1e-2,  # VeRA (Kopiczko et al., 2024), RoBERTa on GLUE: 4e-3..1e-2 for the vectors and the head
    "adalora": 8e-4,  # AdaLoRA (Zhang et al., 2023), DeBERTaV3-base on SST-2: 8e-4
    "none": 0.0,
}

#: Default ``target_modules`` preset for LoRA (see :data:`TARGET_PRESETS`): on MiniLM-L6 / SST-2, LoRA on
#: every linear layer beats LoRA on query/value only (the measurements: docs/results.md).
DEFAULT_TARGETS = "all-linear"
#: Target-module presets, resolved per architecture family by ``loralab.models.methods``.
TARGET_PRESETS = ("all-linear", "qv")

DATA_DIR_ENV = "LORALAB_DATA_DIR"
#: ``--task`` values (unset: classification). Multi-label classification is not supported.
TASKS = ("classification", "regression")


def opt(help: str, default: Any = None, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by the CLI)."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})

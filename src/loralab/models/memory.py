"""Training memory estimate of a run: weights, gradients, optimizer state and activations, and
whether it fits a GPU of a given size. A pure function of the model's config, the run's options and
the parameter counts (``loralab inspect``, ``loralab study run --dry-run``).

    weights     = frozen * bytes(--torch-dtype or --quantize) + trainable * 4
    gradients   = trainable * 4                  (fp32, like the parameters that train)
    optimizer   = trainable * 8                  (AdamW's two moments in fp32)
    activations = layers * (per_layer + dropped) + per_layer
    per_layer   = s*b*(18h + 4i) * a/2 + 5*heads*s^2*b * a/2
                  (what the backward keeps of one block: Korthikanti et al., 2022, "Reducing
                  Activation Recomputation in Large Transformer Models", eq. 1 with a feed-forward
                  of width i instead of 4h; a = 2 bytes under bf16/fp16 autocast, 4 in fp32)
    dropped     = s*b*n*(a + 1)   LoRA/AdaLoRA/VeRA with --dropout > 0: each adapted linear keeps
                  its dropped-out input and the mask; n = the adapted inputs' widths (qv: 2h,
                  all-linear: 5h + i)
    + per_layer                   the backward's gradient buffers of the block it is in

s is ``--max-length`` (batches are padded to their longest text, so this is the worst batch),
b the micro-batch (``--batch-size`` / ``--grad-accum``), h the hidden size, i the feed-forward
width. With ``--gradient-checkpointing`` only each block's input (s*b*h*a) is kept, plus one
block's activations while it is recomputed (and its gradient buffers). Methods whose backward
never enters the backbone (``head``, ``none``) keep one block's activations (the forward's
transient). Not counted: the CUDA context and allocator slack (a few hundred MB), the framework's
own memory on CPU. How close it is: docs/training.md, "Big models" (bench/memory_estimate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loralab.errors import ConfigError

#: Bytes per frozen weight for --torch-dtype / --quantize (4bit: NF4 plus one 8-bit scale per block of
#: 64, QLoRA's double quantization; bitsandbytes leaves embeddings and norms unquantized, not counted).
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.0, "4bit": 0.5 + 1 / 64}
#: Methods whose backward stops at the head: no backbone activations are kept.
NO_BACKBONE_BACKWARD = ("head", "none")
#: Methods whose adapters see their input through --dropout (a kept copy per adapted linear).
DROPOUT_METHODS = ("lora", "adalora", "vera")
GB = 1e9


@dataclass(frozen=True)
class Dims:
    """The model sizes that set activation memory."""

    layers: int
    hidden: int
    heads: int
    intermediate: int


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "total": self.total,
        }

    def format(self, gpu_bytes: int | None = None) -> str:
        parts = ", ".join(f"{k} {_gb(v)}" for k, v in self.to_dict().items() if k != "total")
        line = f"memory (estimate): {_gb(self.total)} = {parts}"
        if gpu_bytes:
            line += "\n" + fit_line(self, gpu_bytes)
        return line


def fits(estimate: MemoryEstimate, gpu_bytes: int) -> bool:
    return estimate.total <= gpu_bytes


def fit_line(estimate: MemoryEstimate, gpu_bytes: int) -> str:
    share = 100.0 * estimate.total / gpu_bytes
    verdict = "fits" if fits(estimate, gpu_bytes) else "does NOT fit"
    return f"{verdict} a {_gb(gpu_bytes)} GPU ({share:.0f} % of it, before the CUDA context's few hundred MB)"


def dims_of(model_config) -> Dims:
    """:class:`Dims` of a transformers config (attribute maps give GPT-2 and DistilBERT the
    common names; the feed-forward width is ``intermediate_size``, DistilBERT's ``hidden_dim``,
    GPT-2's ``n_inner`` or 4 * hidden)."""
    hidden = int(model_config.hidden_size)
    ffn = None
    for name in ("intermediate_size", "hidden_dim", "n_inner"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            ffn = value
            break
    return Dims(
        layers=int(model_config.num_hidden_layers),
        hidden=hidden,
        heads=int(model_config.num_attention_heads),
        intermediate=ffn or 4 * hidden,
    )


def activation_bytes(
    dims: Dims,
    micro_batch: int,
    seq_len: int,
    act_bytes: int,
    checkpointing: bool,
    backbone_backward: bool,
    dropped_width: int = 0,
) -> int:
    """What the backward pass keeps of the backbone's forward, at its peak (see the module
    docstring); ``dropped_width``: the summed input widths of a block's adapted linears whose
    input goes through dropout (0: none)."""
    s, b, h = seq_len, micro_batch, dims.hidden
    scale = act_bytes / 2.0
    per_layer = (s * b * (18 * h + 4 * dims.intermediate) + 5 * dims.heads * s * s * b) * scale
    dropped = s * b * dropped_width * (act_bytes + 1)
    if not backbone_backward:
        return int(per_layer)
    if checkpointing:
        return int(dims.layers * s * b * h * act_bytes + 2 * (per_layer + dropped))
    return int(dims.layers * (per_layer + dropped) + per_layer)


def estimate(
    dims: Dims,
    total_params: int,
    trainable_params: int,
    *,
    method: str,
    micro_batch: int,
    seq_len: int,
    weight_dtype: str | None = None,
    quantize: str | None = None,
    act_bytes: int = 4,
    checkpointing: bool = False,
    dropped_width: int = 0,
) -> MemoryEstimate:
    """The estimate for one process (see the module docstring for every term)."""
    frozen = total_params - trainable_params
    per_weight = WEIGHT_BYTES[quantize or weight_dtype or "fp32"]
    return MemoryEstimate(
        weights=int(frozen * per_weight + trainable_params * 4),
        gradients=trainable_params * 4,
        optimizer=trainable_params * 8,
        activations=activation_bytes(
            dims, micro_batch, seq_len, act_bytes, checkpointing, method not in NO_BACKBONE_BACKWARD, dropped_width
        ),
    )


def run_estimate(config, model_config, total_params: int, trainable_params: int, gpu: bool = True) -> MemoryEstimate:
    """:func:`estimate` for a ``RunConfig``: its method, micro-batch (``batch_size / grad_accum``,
    one process), ``--max-length`` (cut to the model's positions), dtypes and checkpointing.
    ``gpu``: whether ``--precision auto`` is taken as bf16 autocast (a GPU, or a CPU with native bf16) or fp32."""
    tc, mc = config.train, config.model
    precision = tc.precision if tc.precision != "auto" else ("bf16" if gpu else "fp32")
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    seq_len = min(int(config.data.max_length), int(positions)) if positions else int(config.data.max_length)
    dims = dims_of(model_config)
    dropped = 0
    if config.method.method in DROPOUT_METHODS and config.method.dropout > 0:
        qv = list(config.method.target_modules or ["qv"]) == ["qv"]
        dropped = 2 * dims.hidden if qv else 5 * dims.hidden + dims.intermediate
    return estimate(
        dims,
        total_params,
        trainable_params,
        method=config.method.method,
        micro_batch=max(1, tc.batch_size // tc.grad_accum),
        seq_len=seq_len,
        weight_dtype=mc.torch_dtype,
        quantize=mc.quantize,
        act_bytes=4 if precision == "fp32" else 2,
        checkpointing=bool(tc.gradient_checkpointing),
        dropped_width=dropped,
    )


def parse_size(text: str, flag: str = "--gpu-memory") -> int:
    """``24GB``, ``80G``, ``16GiB``, ``40000MB`` → bytes (GB = 10^9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|m)?\s*", str(text).lower())
    if not m:
        raise ConfigError(f"{flag} {text}: expected a size such as 24GB, 80G or 16GiB")
    unit = m.group(2) or "gb"
    factor = {"gib": 2**30, "gb": 1e9, "g": 1e9, "mib": 2**20, "mb": 1e6, "m": 1e6}[unit]
    return int(float(m.group(1)) * factor)


def _gb(n: int | float) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.01 * GB else f"{n / 1e6:.1f} MB"


def memory_of(config, total_params: int, trainable_params: int, gpu: bool = True) -> MemoryEstimate:
    """:func:`run_estimate` with the model config read from ``--model`` (no weights)."""
    from loralab.models.backbones import load_config

    labels = config.data.labels or ["negative", "positive"]
    return run_estimate(config, load_config(config.model.model, labels), total_params, trainable_params, gpu)

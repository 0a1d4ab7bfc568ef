"""The multi-adapter LoRA layers (one backbone layer, many adapters' updates, mixed batches) and
the reading of one peft adapter folder into them."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from loralab.errors import RunDirError

# The peft options the multi-adapter layers lack are exactly those the from-scratch layers lack:
# each must be off (falsy) in adapter_config.json.
from loralab.models.methods.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PREFIX
from loralab.models.methods.scratch_lora import UNSUPPORTED


class AdapterError(RunDirError):
    """A run cannot be served as an adapter (not LoRA, another backbone, a duplicate name...)."""


# ---------------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------------


@dataclass
class Routing:
    """Which rows of the current batch belong to which adapter: ``(uid, start, end)`` segments,
    contiguous and in row order. Shared by every layer of one model; set for each forward pass."""

    segments: list[tuple[int, int, int]] = field(default_factory=list)


class MultiLoRALinear(nn.Module):
    """A frozen linear layer (``nn.Linear`` or GPT-2's ``Conv1D``) plus one LoRA update per adapter.

    Hand-written rather than peft's ``adapter_names`` mixed batches: rows arrive grouped by
    adapter, so each update reads and writes a contiguous slice (no gather/scatter copies), and
    adapters whose heads have different label counts can share the batch (peft's copies of a head
    all have the base head's shape).
    """

    def __init__(self, base_layer: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.routing = routing
        self.updates: dict[
            int, tuple[torch.Tensor, torch.Tensor, float]
        ] = {}  # uid -> (Aᵀ [in, r], Bᵀ [r, out], scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if not self.updates:
            return y
        x2 = x.reshape(-1, x.shape[-1])
        y2 = y.view(-1, y.shape[-1])
        per_row = x2.shape[0] // x.shape[0]  # tokens per batch row (1 for [batch, features] inputs)
        for uid, start, end in self.routing.segments:
            update = self.updates.get(uid)
            if update is not None:
                a_t, b_t, scale = update
                rows = slice(start * per_row, end * per_row)
                h = torch.mm(x2[rows], a_t)
                if h.dtype == y2.dtype == b_t.dtype:
                    y2[rows].addmm_(h, b_t, alpha=scale)
                else:  # under bf16 autocast: the in-place addmm_ would mix dtypes
                    y2[rows].add_(torch.mm(h, b_t).to(y2.dtype), alpha=scale)
        return y


class MultiHead(nn.Module):
    """One classification head per adapter in place of the model's head module: each adapter's
    rows go through its own head; outputs narrower than the widest are padded with zeros (the
    caller keeps each row's own labels)."""

    def __init__(self, template: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.template = template  # the base model's head: the structure each adapter's head copies
        self.routing = routing
        self.heads: dict[int, nn.Module] = {}

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        outs = [(s, e, self.heads[uid](x[s:e], *args, **kwargs)) for uid, s, e in self.routing.segments]
        width = max(o.shape[-1] for _, _, o in outs)
        first = outs[0][2]
        y = first.new_zeros((x.shape[0], *first.shape[1:-1], width))
        for s, e, o in outs:
            y[s:e, ..., : o.shape[-1]] = o
        return y


# ---------------------------------------------------------------------------------------------
# Reading an adapter folder
# ---------------------------------------------------------------------------------------------


def load_adapter_tensors(adapter_dir: Path, modules: dict[str, nn.Module], heads: list[str]):
    """``(layers, head_states)`` from a peft adapter folder, checked against ``modules`` (the
    backbone's modules by name, as ``dict(model.named_modules())`` gives them: a snapshot taken
    once, so reading an adapter never walks the model while another thread changes it)."""
    from safetensors.torch import load_file
    from transformers.pytorch_utils import Conv1D

    config_path = adapter_dir / ADAPTER_CONFIG
    try:
        conf = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{config_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if conf.get("peft_type") != "LORA":
        raise AdapterError(f"{config_path}: a {conf.get('peft_type')} adapter, not LoRA")
    used = [k for k in UNSUPPORTED if conf.get(k) and conf.get(k) != "none"]
    if conf.get("bias", "none") != "none":
        used.append(f"bias={conf['bias']}")
    if used:
        raise AdapterError(
            f"{config_path}: uses peft option(s) {', '.join(used)}, which multi-adapter serving does "
            "not implement (serve this run alone)"
        )
    r, alpha = int(conf["r"]), float(conf["lora_alpha"])
    scale = alpha / math.sqrt(r) if conf.get("use_rslora") else alpha / r
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    layers: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    head_states: dict[str, dict[str, torch.Tensor]] = {h: {} for h in heads}
    for key in sorted(tensors):
        name = key.removeprefix(PREFIX)
        if name.endswith(".lora_B.weight"):
            continue
        if name.endswith(".lora_A.weight"):
            target = name.removesuffix(".lora_A.weight")
            a, b = tensors[key], tensors.get(f"{PREFIX}{target}.lora_B.weight")
            base = modules.get(target)
            if isinstance(base, MultiLoRALinear):
                base = base.base_layer
            if b is None or not isinstance(base, (nn.Linear, Conv1D)):
                raise AdapterError(f"{adapter_dir / ADAPTER_WEIGHTS}: {key} does not fit the backbone")
            in_f, out_f = base.weight.shape if isinstance(base, Conv1D) else base.weight.shape[::-1]
            if a.shape[1] != in_f or b.shape[0] != out_f or a.shape[0] != b.shape[1]:
                raise AdapterError(
                    f"{adapter_dir / ADAPTER_WEIGHTS}: {target} has shapes {tuple(a.shape)} / "
                    f"{tuple(b.shape)}, the backbone's layer is {in_f} -> {out_f}"
                )
            layers[target] = (a.float().t().contiguous(), b.float().t().contiguous(), scale)  # stored transposed
            continue
        head = next((h for h in heads if name.startswith(f"{h}.")), None)
        if head is None:
            raise AdapterError(f"{adapter_dir / ADAPTER_WEIGHTS}: {key} is neither a LoRA matrix nor in the head")
        head_states[head][name.removeprefix(f"{head}.")] = tensors[key]
    missing = [h for h, state in head_states.items() if not state]
    if missing or not layers:
        what = f"no weights for the head module(s) {missing}" if missing else "no LoRA matrices"
        raise AdapterError(f"{adapter_dir / ADAPTER_WEIGHTS}: {what}")
    return layers, head_states


def head_copy(template: nn.Module, state: dict[str, torch.Tensor], where: Path) -> nn.Module:
    """A copy of ``template`` holding ``state`` (whose last layer may have another width)."""
    head = copy.deepcopy(template)
    expected = dict(head.state_dict())
    if set(state) != set(expected):
        raise AdapterError(f"{where}: head weights {sorted(state)} do not fit the backbone's head {sorted(expected)}")
    for key, value in state.items():
        module_name, _, leaf = key.rpartition(".")
        module = head.get_submodule(module_name) if module_name else head
        setattr(module, leaf, nn.Parameter(value.float().clone(), requires_grad=False))
        if isinstance(module, nn.Linear) and leaf == "weight":
            module.out_features, module.in_features = value.shape
    return head.eval()

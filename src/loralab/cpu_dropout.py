"""A cheaper dropout for training on CPU.

Why this exists (``bench/profile_step.py``, bench/RESULTS.md): in a MiniLM LoRA r8 step on a
2-core CPU, PyTorch's dropout mask (``aten::bernoulli_``: one Mersenne-Twister draw per element)
takes 21 % of the operator time with adapters on query/value and 32 % on every linear layer:
the largest cost that is not the model's own matmuls. Dropout needs far fewer random bits than that: this implementation fills a
quarter as many 64-bit integers with ``Tensor.random_`` and reads them as 16-bit words, one per
element, and keeps an element when its word is at or above a threshold. Same distribution up to the
quantisation of ``p`` to a multiple of 1/65,536 (0.1 becomes 0.100006; the kept elements are
scaled by the exact ``1 / (1 - p')``, so the expectation is unchanged), same generator (seeded by
``torch.manual_seed``, deterministic). A step of LoRA r8 on MiniLM: 120.9 → 103.3 ms with fused AdamW.

It replaces only ``nn.Dropout`` *modules* (the model's hidden-state dropouts and peft's
``lora_dropout``), only for CPU tensors and only while training (``swap_cpu_dropout``); the
attention-probability dropout inside the attention function and every GPU path are untouched
(CUDA's dropout is a fused Philox kernel already).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_WORDS = 1 << 16


def keep_mask(shape: torch.Size, p: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A boolean mask that keeps each element with probability ``1 - p'`` (``p'`` = ``p`` rounded to
    a multiple of 1/65,536), and ``p'``."""
    n = shape.numel()
    drop_words = round(p * _WORDS)
    # the full int64 range: random_() without bounds never sets the sign bit, which would bias
    # every fourth word (modulo 2**64 - 1 leaves a bias of 2**-64)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1, generator=generator)
    words = words.view(torch.int16)[:n].view(shape)
    return words >= (drop_words - _WORDS // 2), drop_words / _WORDS


class CPUDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU tensors; anywhere else, the stock kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.p >= 1.0 or x.device.type != "cpu":
            return super().forward(x)
        keep, p = keep_mask(x.shape, self.p)
        if p == 0.0:
            return x
        # the scale is in x's dtype, as in torch's own CPU dropout: for bf16 input 1/(1-p) is rounded
        # first (1/0.9 -> 1.1094). Scaling by a Python number and then masking would round once,
        # but costs one more elementwise pass forward and backward (~1.5x per call, measured).
        scale = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
        return x.mul_(scale) if self.inplace else x * scale


@contextlib.contextmanager
def swap_cpu_dropout(model: nn.Module) -> Iterator[int]:
    """Within the block, every ``nn.Dropout`` module of ``model`` is a :class:`CPUDropout` with the
    same ``p``; afterwards the original modules are back (with the training flag the block left).
    Yields the number of modules swapped. The state dict is unchanged (dropout has no state)."""
    swapped: list[tuple[nn.Module, str, nn.Dropout, CPUDropout]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = CPUDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped.append((parent, name, child, fast))
    try:
        yield len(swapped)
    finally:
        for parent, name, original, fast in swapped:
            original.train(fast.training)
            setattr(parent, name, original)

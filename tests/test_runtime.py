"""runtime: precision has one owner; seeding; importing loralab leaves process-wide settings alone."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from loralab.runtime import seed_everything


def test_precision_has_one_owner(monkeypatch):
    import pytest

    from loralab import runtime
    from loralab.errors import ConfigError
    from loralab.runtime import resolve_precision

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, launcher="") is None
    assert resolve_precision("auto", cpu, launcher="no") is None
    assert resolve_precision("auto", cpu, launcher="fp16") is torch.float16  # accelerate launch --mixed_precision fp16
    assert resolve_precision("bf16", cpu, launcher="bf16") is torch.bfloat16  # the same choice twice: fine
    assert resolve_precision("fp16", gpu, launcher="") is torch.float16
    with pytest.raises(
        ConfigError, match=r"--precision bf16 conflicts with `accelerate launch --mixed_precision fp16`"
    ):
        resolve_precision("bf16", cpu, launcher="fp16")
    with pytest.raises(ConfigError, match="fp8"):
        resolve_precision("auto", cpu, launcher="fp8")


def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch, tmp_path):
    """`auto` on CPU follows the flags: bf16 where AVX-512 BF16 or AMX-BF16 is there, fp32 elsewhere;
    an explicit --precision and accelerate's setting are unaffected."""
    from loralab import runtime
    from loralab.runtime import cpu_has_native_bf16, precision_name, resolve_precision

    def cpuinfo(flags: str) -> str:
        path = tmp_path / f"cpuinfo-{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
        return str(path)

    assert cpu_has_native_bf16(cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"))
    assert cpu_has_native_bf16(cpuinfo("fpu sse2 avx2 amx_bf16 amx_tile"))
    assert not cpu_has_native_bf16(cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512_vnni"))  # AVX-512, no BF16
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))  # not Linux: no flags, stays fp32

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu, launcher="") is torch.bfloat16
    assert resolve_precision("fp32", cpu, launcher="") is None
    assert resolve_precision("auto", cpu, launcher="fp16") is torch.float16
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu, launcher="") is None
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "ACCELERATE_MIXED_PRECISION",
            "fp16",
            "--precision bf16 conflicts with `accelerate launch --mixed_precision fp16` "
            "(ACCELERATE_MIXED_PRECISION); loralab owns precision: drop one of the two",
        ),
        (
            "ACCELERATE_USE_DEEPSPEED",
            "true",
            "accelerate config asks for DeepSpeed (ACCELERATE_USE_DEEPSPEED): loralab trains data-parallel only; "
            "use an accelerate config with distributed_type MULTI_GPU / MULTI_CPU (or torchrun)",
        ),
        (
            "ACCELERATE_USE_FSDP",
            "true",
            "accelerate config asks for FSDP (ACCELERATE_USE_FSDP): loralab trains data-parallel only; "
            "use an accelerate config with distributed_type MULTI_GPU / MULTI_CPU (or torchrun)",
        ),
    ],
)
def test_an_unsupported_accelerate_setting_is_one_line_before_any_work(
    tiny_models, tiny_data, tmp_path, variable, value, message
):
    import os
    import subprocess
    import sys

    env = dict(os.environ, **{variable: value})
    out = tmp_path / "r"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loralab",
            "-q",
            "train",
            "--model",
            str(tiny_models["bert"]),
            "--data-dir",
            str(tiny_data),
            "--output-dir",
            str(out),
            "--precision",
            "bf16",
            "--device",
            "cpu",
            "--max-length",
            "48",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"loralab: error: {message}"]
    assert not out.exists()


def test_import_loralab_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('pdf'); import loralab, loralab.training.run, loralab.plots, loralab.cli; "
        "loralab.cli.build_parser(); print(matplotlib.get_backend())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pdf"


def test_seed_everything_seeds_python_numpy_and_torch_as_before():
    # the hand-written seeding that accelerate's set_seed replaced: the same draws, so old runs replay
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    for seed in (0, 42, 2**32 - 1):
        seed_everything(seed)
        new = draws()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        assert new == draws()


def test_library_versions_record_the_cpu_model_and_count():
    from loralab.runtime import cpu_model, library_versions

    v = library_versions()
    assert v["cpu"] == cpu_model() and v["cpu_count"] == str(os.cpu_count())
    if Path("/proc/cpuinfo").is_file():  # Linux: the model name line, not platform.processor()'s ""
        names = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ]
        assert v["cpu"] == (names[0] if names else v["cpu"]) and v["cpu"]


def test_cpu_peak_memory_is_the_process_own_not_its_parents(tmp_path):
    """A study worker is a child of the driver: its peak must not include the driver's, which the
    kernel's ru_maxrss carries over fork and exec."""
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc")
    held = bytearray(1536 * 2**20)  # the parent's peak: 1.5 GiB, touched
    for i in range(0, len(held), 4096):
        held[i] = 1
    code = (
        "import torch; from loralab.runtime import PeakMemory; "
        "print(PeakMemory(torch.device('cpu')).read()['peak_bytes'])"
    )
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 10 * 2**20 < child < 1024 * 2**20, child  # importing torch: a few hundred MB, not the parent's 1.5 GiB
    del held

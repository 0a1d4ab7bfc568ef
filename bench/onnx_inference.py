"""ONNX Runtime inference against eager PyTorch: accuracy, agreement and the whole `loralab predict --file` command.

    python bench/onnx_inference.py RUN --data-dir ../shared/data/sst2    # a trained run (trains nothing)
    python bench/onnx_inference.py RUN --data-dir DIR --quick            # smoke mode (used by the tests)

Exports RUN as fp32 and int8 ONNX (``loralab export --format onnx [--quantize int8]``) into a
temporary folder, writes the validation sentences to a file, then times the whole command
``loralab -q predict FOLDER --file F --json`` in a subprocess (start-up, imports, loading and
scoring: what a user waits for) for eager fp32, eager bf16 (``--precision bf16``), ONNX fp32 and
ONNX int8, the variants interleaved over ``--repeats`` rounds so that a busy machine slows them
alike. Accuracy and agreement come from those commands' own output. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (row name, what ``loralab predict`` is given, extra flags)
VARIANTS = [
    ("eager fp32", "run", []),
    ("eager bf16", "run", ["--precision", "bf16"]),
    ("ONNX fp32", "onnx-fp32", []),
    ("ONNX int8", "onnx-int8", []),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def predict(target: Path, flags: list[str], file: Path) -> tuple[float, list[dict]]:
    """Wall seconds of ``loralab -q predict TARGET --file FILE --json FLAGS`` and its predictions."""
    cmd = [sys.executable, "-m", "loralab", "-q", "predict", str(target), "--file", str(file), "--json", *flags]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", metavar="RUN", help="a trained run directory")
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"), help="folder with validation.tsv")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds of every command (the median is shown)")
    ap.add_argument("-q", "--quick", action="store_true", help="64 sentences, one round")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1

    from loralab.config import DataConfig
    from loralab.data import load_data
    from loralab.exports import export_run
    from loralab.files import read_json

    run = Path(args.run)
    results = read_json(run / "results.json")
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=None), seed=0)
    texts, gold = data.validation.texts, [data.label_names[y] for y in data.validation.labels]
    if args.quick:
        texts, gold = texts[:64], gold[:64]

    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        tmp = Path(tmp)
        targets = {"run": run}
        export_s = {}
        for name, quantize in (("onnx-fp32", None), ("onnx-int8", "int8")):
            t = time.perf_counter()
            targets[name] = export_run(run, tmp / name, format="onnx", quantize=quantize).path
            export_s[name] = time.perf_counter() - t
        file = tmp / "validation.txt"
        file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        load_before = os.getloadavg()
        walls: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        labels: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, target, flags in VARIANTS:
                wall, preds = predict(targets[target], flags, file)
                walls[name].append(wall)
                labels[name] = [p["label_name"] for p in preds]
        load_after = os.getloadavg()
        size = {k: (targets[k] / "model.onnx").stat().st_size / 2**20 for k in ("onnx-fp32", "onnx-int8")}

    n = len(texts)
    base_wall = statistics.median(walls["eager fp32"])
    print(
        f"{run}  {n} validation sentences  run's validation accuracy "
        f"{results.get('validation', {}).get('accuracy', float('nan')):.4f}"
    )
    print(
        f"{cpu_name()}, {os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; {args.repeats} round(s), median wall time"
    )
    print(
        f"export: fp32 {export_s['onnx-fp32']:.1f} s ({size['onnx-fp32']:.1f} MiB), "
        f"int8 {export_s['onnx-int8']:.1f} s ({size['onnx-int8']:.1f} MiB)"
    )
    print()
    print("| variant | accuracy | agreement with eager fp32 | `predict --file` wall s | sentences/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in VARIANTS:
        acc = sum(p == g for p, g in zip(labels[name], gold, strict=True)) / n
        agree = sum(p == q for p, q in zip(labels[name], labels["eager fp32"], strict=True)) / n
        wall = statistics.median(walls[name])
        runs = ", ".join(f"{w:.1f}" for w in walls[name])
        print(f"| {name} | {acc:.4f} | {agree:.2%} | {wall:.2f} ({runs}) | {n / wall:.1f} | {base_wall / wall:.2f}× |")


if __name__ == "__main__":
    main()

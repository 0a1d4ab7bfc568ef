#!/usr/bin/env bash
# Create .venv and install loralab with its test tools. torch is pinned first: an unpinned torch
# pulls gigabytes of CUDA packages; 2.13.0 is the CPU wheel this environment provides.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,serve,ray,tune,track,onnx,datasets]"

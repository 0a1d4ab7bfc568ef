#!/usr/bin/env bash
# The test command: the fast default suite (tiny random-initialised models; a few MiniLM tests).
# Slow integration tests (MiniLM on SST-2 subsets) run with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LORALAB_DATA_DIR="${LORALAB_DATA_DIR:-$(cd .. && pwd)/shared/data/sst2}"
exec .venv/bin/python -m pytest -q "$@"

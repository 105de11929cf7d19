#!/usr/bin/env bash
# Usage: launch/train.sh GIN_FILE MODEL_DIR [extra --gin.NAME=VALUE flags...]
#   e.g. launch/train.sh gin/demo.gin runs/demo
# Runs on this machine (CPU or a GPU node; all local accelerators, data parallel).
# Expected result: checkpoints MODEL_DIR/checkpoint_<step>, config.gin, TensorBoard
# scalars under MODEL_DIR/train and MODEL_DIR/validation; the last line is
# "[flan_t5x] done at step N ..." (T5X: its own log lines). Rerunning resumes from the latest checkpoint.
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x).
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python, else python3 on PATH).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 2 ]]; then sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 2; fi
GIN_FILE=$1; MODEL_DIR=$2; shift 2
source "$(dirname "$0")/lib/choose_python.sh"
choose_python "$(cd "$(dirname "$0")/.." && pwd)" "$ENGINE"
exec "$PYTHON" -m "$ENGINE.train" --gin_file="$GIN_FILE" --gin.MODEL_DIR="'$MODEL_DIR'" "$@"

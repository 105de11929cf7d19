#!/usr/bin/env bash
# Usage: launch/train.sh GIN_FILE MODEL_DIR [extra --gin.NAME=VALUE flags...]
#   e.g. launch/train.sh gin/demo.gin runs/demo
# Runs on this machine (CPU or a GPU node; all local accelerators, data parallel).
# Expected result: checkpoints MODEL_DIR/checkpoint_<step>, config.gin, TensorBoard
# scalars under MODEL_DIR/train and MODEL_DIR/validation; the last line is
# "[flan_t5x] done at step N ..." (T5X: its own log lines). Rerunning resumes from the latest checkpoint.
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 2 ]]; then sed -n '2,9p' "$0"; exit 2; fi
GIN_FILE=$1; MODEL_DIR=$2; shift 2
PYTHON=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
exec "$PYTHON" -m "$ENGINE.train" --gin_file="$GIN_FILE" --gin.MODEL_DIR="'$MODEL_DIR'" "$@"

#!/usr/bin/env bash
# Usage: launch/infer.sh CHECKPOINT_PATH INPUT_JSONL OUTPUT_DIR [GIN_FILE] [extra --gin flags...]
#   e.g. FLAN_VOCAB_PATH=.../spiece.model launch/infer.sh ckpt inputs.jsonl runs/infer
#        launch/infer.sh runs/demo/checkpoint_300 inputs.jsonl runs/demo/infer gin/demo_model.gin --gin_file=gin/runs/infer.gin
# flan_t5x only (upstream T5X reads tasks, not JSONL files: gin/infer.gin with ENGINE=t5x python -m t5x.infer).
# The input text is the "inputs" field of each line (--gin.INFER_INPUT_FIELD="'text'" to change).
# Expected result: OUTPUT_DIR/predictions-<host>-of-<hosts>.jsonl, one
# {"index","input","prediction","score"} line per input line; if killed, rerun the same
# command: finished chunks (OUTPUT_DIR/host-*/chunk-*.done) are kept, nothing is duplicated.
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python, else python3 on PATH).
set -euo pipefail
if [[ $# -lt 3 ]]; then sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 2; fi
CHECKPOINT_PATH=$1; INPUT=$2; OUTPUT_DIR=$3; GIN_FILE=${4:-gin/infer_jsonl.gin}; shift $(( $# >= 4 ? 4 : 3 ))
source "$(dirname "$0")/lib/choose_python.sh"
choose_python "$(cd "$(dirname "$0")/.." && pwd)" flan_t5x
exec "$PYTHON" -m flan_t5x.infer --gin_file="$GIN_FILE" --gin.CHECKPOINT_PATH="'$CHECKPOINT_PATH'" \
  --gin.INFER_INPUT_PATH="'$INPUT'" --gin.INFER_OUTPUT_DIR="'$OUTPUT_DIR'" "$@"

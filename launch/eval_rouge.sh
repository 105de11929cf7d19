#!/usr/bin/env bash
# Usage: launch/eval_rouge.sh CHECKPOINT_PATH OUTPUT_DIR [GIN_FILE] [extra --gin flags...]
#   e.g. launch/eval_rouge.sh runs/demo runs/demo/eval gin/eval_demo.gin
#        FLAN_DATA_DIR=... FLAN_VOCAB_PATH=.../spiece.model launch/eval_rouge.sh ckpt out
# GIN_FILE defaults to gin/eval_heldout.gin (FLAN held-out tasks, Flan-T5 Base).
# CHECKPOINT_PATH: flan-t5x MODEL_DIR or checkpoint_<step>, Hugging Face dir, or T5X checkpoint.
# Expected result: a markdown table of ROUGE-1/2/Lsum (summarization) and accuracy (ratings)
# per task and per template on stdout, and OUTPUT_DIR/{<task>.json,<task>-predictions.jsonl,
# results.json,results.md,inference_eval/}.
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x);
# a MODEL_DIR (not a checkpoint_<step>) is then read as T5X's RestoreCheckpointConfig.mode = 'latest'.
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python, else python3 on PATH).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 2 ]]; then sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 2; fi
CHECKPOINT_PATH=$1; OUTPUT_DIR=$2; GIN_FILE=${3:-gin/eval_heldout.gin}; shift $(( $# >= 3 ? 3 : 2 ))
source "$(dirname "$0")/lib/choose_python.sh"
choose_python "$(cd "$(dirname "$0")/.." && pwd)" "$ENGINE"
MODE=()  # T5X restores a checkpoint_<step> ('specific', its eval.gin's default) or a MODEL_DIR's newest
[[ "$(basename "$CHECKPOINT_PATH")" =~ ^checkpoint_[0-9]+$ ]] || MODE=(--gin.utils.RestoreCheckpointConfig.mode="'latest'")
exec "$PYTHON" -m "$ENGINE.eval" --gin_file="$GIN_FILE" --gin.CHECKPOINT_PATH="'$CHECKPOINT_PATH'" \
  --gin.EVAL_OUTPUT_DIR="'$OUTPUT_DIR'" "${MODE[@]}" "$@"

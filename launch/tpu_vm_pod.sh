#!/usr/bin/env bash
# Usage: launch/tpu_vm_pod.sh TPU_NAME ZONE REPO_DIR_ON_VM GIN_FILE MODEL_DIR [--gin.X=Y...]
#   e.g. launch/tpu_vm_pod.sh my-v4-32 us-central2-b '~/flan-t5x' gin/flan_mix.gin \
#          gs://my-bucket/flan_base_run1 --gin.INITIAL_CHECKPOINT_PATH="'gs://my-bucket/flan-t5-base'"
# Trains on every host of a Cloud TPU VM pod slice: launch/tpu_vm.sh runs the same
# `python -m $ENGINE.train` on all workers (ENGINE=t5x: upstream T5X, installed in that .venv); each detects the slice (TPU_WORKER_HOSTNAMES) and
# starts jax.distributed itself. MODEL_DIR must be a gs:// path (every host writes its shards).
# The repository and its .venv must exist at REPO_DIR_ON_VM on every worker.
# Expected result: per worker, prefixed by gcloud, one line
#   [flan_t5x] process <i>/<hosts> on <worker>: 4 local TPU v4 devices (ids [...]) of 16 in all
# then worker 0's progress bar and losses; MODEL_DIR/checkpoint_<step>, MODEL_DIR/train (TensorBoard)
# and MODEL_DIR/config.gin. Re-running the same command after a preemption resumes exactly.
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 5 ]]; then sed -n '2,15p' "$0"; exit 2; fi
TPU_NAME=$1; ZONE=$2; REPO_DIR=$3; GIN_FILE=$4; MODEL_DIR=$5; shift 5
exec "$(dirname "$0")/tpu_vm.sh" "$TPU_NAME" "$ZONE" "$REPO_DIR" .venv/bin/python -m "$ENGINE.train" \
  --gin_file="$GIN_FILE" --gin.MODEL_DIR="'$MODEL_DIR'" "$@"

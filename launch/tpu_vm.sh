#!/usr/bin/env bash
# Usage: launch/tpu_vm.sh TPU_NAME ZONE REPO_DIR_ON_VM COMMAND...
#   e.g. launch/tpu_vm.sh my-v4-32 us-central2-b ~/flan-t5x \
#          launch/eval_rouge.sh gs://bucket/ckpt gs://bucket/eval
# Runs the same command on every worker of a Cloud TPU VM (all hosts must run it: JAX
# initializes the multi-host runtime from the TPU metadata), via
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all --command ...
# The repository and its .venv must already exist at REPO_DIR_ON_VM on every worker;
# MODEL_DIR / output paths should be on GCS (gs://...) so all hosts see the same files.
# Expected result: each worker's output streamed back, prefixed by gcloud; process 0
# writes checkpoints / eval outputs; the infer job writes one predictions file per host.
set -euo pipefail
if [[ $# -lt 4 ]]; then sed -n '2,12p' "$0"; exit 2; fi
TPU_NAME=$1; ZONE=$2; REPO_DIR=$3; shift 3
printf -v REMOTE_CMD '%q ' "$@"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command "cd $REPO_DIR && $REMOTE_CMD"

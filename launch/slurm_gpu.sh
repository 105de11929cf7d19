#!/usr/bin/env bash
# Usage: sbatch --nodes=N --ntasks-per-node=1 --gpus-per-node=G launch/slurm_gpu.sh GIN_FILE MODEL_DIR [--gin.X=Y...]
#   e.g. sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_gpu.sh \
#          gin/flan_mix.gin /shared/ckpt/flan_base --gin.INITIAL_CHECKPOINT_PATH="'/models/flan-t5-base'"
# One process per node, each driving all of its node's GPUs. `srun` starts the processes; each
# finds the coordinator (the first node), the process count and its index from SLURM's variables
# (jax.distributed's SLURM detection), so no address is passed by hand.
# MODEL_DIR must be on a filesystem every node sees (NFS, Lustre, GCS): all processes write
# their checkpoint shards there.
# Expected result: one line per process, e.g.
#   [flan_t5x] process 1/2 on node-b: 8 local NVIDIA H100 devices (ids [8, ..., 15]) of 16 in all
# then process 0's progress bar and losses; checkpoints MODEL_DIR/checkpoint_<step> (written by
# all processes together), TensorBoard and config.gin from process 0. A killed node stops the
# others within --heartbeat_timeout_seconds (default 100); resubmitting resumes from the last
# checkpoint.
#SBATCH --job-name=flan-t5x
#SBATCH --ntasks-per-node=1
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 2 ]]; then sed -n '2,17p' "$0"; exit 2; fi
GIN_FILE=$1; MODEL_DIR=$2; shift 2
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
source "$REPO/launch/lib/choose_python.sh"
choose_python "$REPO" "$ENGINE"
cd "$REPO"
exec srun --kill-on-bad-exit=1 "$PYTHON" -m "$ENGINE.train" --gin_file="$GIN_FILE" \
  --gin.MODEL_DIR="'$MODEL_DIR'" "$@"

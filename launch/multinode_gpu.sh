#!/usr/bin/env bash
# Usage (run once on every node, e.g. with pdsh or by hand):
#   COORDINATOR=node-a:1234 NUM_NODES=2 NODE_RANK=<0..NUM_NODES-1> \
#     launch/multinode_gpu.sh JOB GIN_FILE [--gin.X=Y...]
#   e.g. on node-a: COORDINATOR=node-a:1234 NUM_NODES=2 NODE_RANK=0 launch/multinode_gpu.sh train \
#          gin/flan_mix.gin --gin.MODEL_DIR="'/shared/ckpt/run1'"
#        on node-b: the same with NODE_RANK=1.
# JOB is train, eval or infer. Without a scheduler: T5X's flags --multiprocess_gpu,
# --coordinator_address, --process_count, --process_index start jax.distributed; node 0 hosts the
# coordinator at COORDINATOR (reachable from every node). Output paths must be on a filesystem
# every node sees.
# Expected result: on each node one line
#   [flan_t5x] process <NODE_RANK>/<NUM_NODES> on <host>: <G> local <GPU> devices (...) of <N*G> in all
# then the job's output (node 0 prints progress, losses and reports; eval: results.md; infer: one
# predictions-<rank>-of-<n>.jsonl per node). If a node dies, the others exit with
# "Terminating process because the JAX distributed service detected fatal errors" within
# --heartbeat_timeout_seconds; starting all nodes again resumes.
# ENGINE=t5x runs upstream T5X's python -m t5x.<job> with the same gin file (default ENGINE=flan_t5x).
set -euo pipefail
ENGINE=${ENGINE:-flan_t5x}
case "$ENGINE" in flan_t5x|t5x) ;; *) echo "ENGINE=$ENGINE: expected flan_t5x or t5x (upstream T5X)" >&2; exit 2;; esac
if [[ $# -lt 2 || -z "${COORDINATOR:-}" || -z "${NUM_NODES:-}" || -z "${NODE_RANK:-}" ]]; then
  sed -n '2,20p' "$0"; exit 2
fi
JOB=$1; GIN_FILE=$2; shift 2
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
source "$REPO/launch/lib/choose_python.sh"
choose_python "$REPO" "$ENGINE"
cd "$REPO"
exec "$PYTHON" -m "$ENGINE.$JOB" --gin_file="$GIN_FILE" --multiprocess_gpu \
  --coordinator_address="$COORDINATOR" --process_count="$NUM_NODES" --process_index="$NODE_RANK" "$@"

"""One process of a multi-process training run on this machine (CPU, gloo collectives).

  python multihost_worker.py MODEL_DIR STEPS PERIOD PROCESS_INDEX PROCESS_COUNT PORT

Each process has 2 simulated CPU devices; together they train the engine's tiny model
data-parallel on the tiny copy task (each host reads its own shard), through the same
`runtime.initialize` and `train.train` the CLI uses. Prints the logged losses as JSON (or, on
SIGTERM, the step it saved, and exits with preemption.EXIT_CODE).
"""
import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0'
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

GLOBAL_BATCH = 8
DROPOUT = 0.1


def main() -> None:
  model_dir, steps, period, index, count, port = sys.argv[1:7]
  from flan_t5x import partitioning, runtime  # pylint: disable=g-import-not-at-top
  runtime.initialize(coordinator_address=f'localhost:{port}', process_count=int(count),
                     process_index=int(index), heartbeat_timeout_seconds=10)
  import helpers  # pylint: disable=g-import-not-at-top
  from flan_t5x import preemption  # pylint: disable=g-import-not-at-top
  try:
    step, history = helpers.run_training(model_dir, int(steps), model=helpers.tiny_model(dropout_rate=DROPOUT),
                                         batch_size=GLOBAL_BATCH, period=int(period),
                                         partitioner=partitioning.PjitPartitioner())
  except preemption.Preempted as stop:  # as the command-line job: the line, then the documented exit code
    print(json.dumps({'preempted_at': stop.step, 'line': stop.line}), flush=True)
    sys.exit(preemption.EXIT_CODE)
  print(json.dumps({'step': step, 'losses': {h['step']: h['loss'] for h in history}}), flush=True)


if __name__ == '__main__':
  main()

r"""Plan a run for a Cloud TPU slice from this machine: compile the job's step, say if it fits, how fast.

  python -m flan_t5x.plan --gin_file=gin/flan_mix.gin --topology=v4-8
  python -m flan_t5x.plan --gin_file=gin/flan_mix.gin --gin_file=gin/sizes/xxl.gin --topology=v4-32 --sweep
  python -m flan_t5x.plan --gin_file=gin/eval_heldout.gin --topology=v5litepod-16

Takes the gin files and --gin.NAME=VALUE overrides of train / eval / infer (which job is read
from the files) and one or more --topology (Cloud TPU accelerator types: v4-8, v4-32,
v5litepod-16, v5p-8, v6e-8, ...). For each slice it builds the gin's partitioner on the slice's
compile-only devices (libtpu, the `[tpu]` extra) and compiles, with abstract parameters and
optimizer state, the function the job runs: the Trainer's train step, or the evaluation /
inference decode. Prints per chip: state, temporaries and total bytes against HBM (fits, margin),
FLOPs, XLA's estimated step time, projected examples/s, tokens/s per chip, MFU, and the
collectives; writes the same as JSON (--json). --sweep compiles num_partitions x microbatches and
names the fastest configuration that fits.
"""

from __future__ import annotations

import copy
import json
import os
import sys

from absl import app
from absl import flags

from flan_t5x import tpu_slices

# libtpu on a host without a TPU: it asks the metadata server and the environment for the slice
# it runs on and logs errors when neither says. A plan only uses its compiler: say "this host".
_LIBTPU_ENV = {'ALLOW_MULTIPLE_LIBTPU_LOAD': '1', 'TPU_SKIP_MDS_QUERY': '1', 'TPU_WORKER_ID': '0', 'TPU_WORKER_HOSTNAMES': 'localhost',
               'TPU_STDERR_LOG_LEVEL': '3', 'TPU_MIN_LOG_LEVEL': '3'}

DEFAULT_DECODE_LENGTHS = {'inputs': 2048, 'targets': 512}


def _define_flags() -> None:
  flags.DEFINE_multi_string('topology', None, 'Cloud TPU accelerator type, e.g. v4-32; repeatable.')
  flags.DEFINE_bool('sweep', False, 'Compile num_partitions x num_microbatches and name the fastest that fits.')
  flags.DEFINE_string('json', None, 'Also write the plans as JSON to this file.')
  flags.DEFINE_string('decode_lengths', None,
                      "Decode plans when the gin leaves TASK_FEATURE_LENGTHS to the data: 'inputs:2048,targets:512' "
                      '(default: those, the flan_mix training lengths).')


# ------------------------------------------------------------------ gin

def _parse_job_gin() -> str:
  """Parses the gin files as the job they configure (train, eval or infer); returns that job."""
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  first_error = None
  for job in ('train', 'eval', 'infer'):
    gin.clear_config()
    try:
      gin_utils.parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings, flags.FLAGS.gin_search_paths,
                          finalize=False, job=job)
    except (ValueError, AttributeError, ImportError, LookupError) as err:
      first_error = first_error or err
      continue
    return job
  raise first_error


# Each job's gin entry point, as module and function name: found in gin's registry by what it
# wraps, so that this job imports no other job.
_ENTRY_POINTS = {'train': ('flan_t5x.training', 'train'),
                 'eval': ('flan_t5x.t5x_names.eval_script', 'evaluate'),
                 'infer': ('flan_t5x.t5x_names.infer_script', 'infer')}


def _bound(job: str, *names: str) -> dict:
  """The gin values of the job's entry-point arguments `names`, references evaluated now (inside
  main's target_devices: the partitioner lands on the slice)."""
  import gin  # pylint: disable=g-import-not-at-top
  module, name = _ENTRY_POINTS[job]
  selectors = [selector for selector, configurable in gin.config._REGISTRY._selector_map.items()  # pylint: disable=protected-access
               if getattr(configurable.wrapped, '__module__', None) == module
               and getattr(configurable.wrapped, '__name__', None) == name]
  bindings = gin.get_bindings(selectors[0], resolve_references=False) if selectors else {}
  return {arg: copy.deepcopy(bindings[arg]) for arg in names if arg in bindings}


def _parse_lengths(text: str | None) -> dict[str, int]:
  if not text:
    return dict(DEFAULT_DECODE_LENGTHS)
  try:
    pairs = dict(item.split(':') for item in text.split(','))
    return {'inputs': int(pairs['inputs']), 'targets': int(pairs['targets'])}
  except (ValueError, KeyError) as err:
    raise app.UsageError(f"--decode_lengths={text!r}: expected 'inputs:N,targets:M'") from err


# --------------------------------------------------------------- planning

def _plan_train(devices, tpu_slice, sweep: bool) -> list:
  from flan_t5x import aot_plan  # pylint: disable=g-import-not-at-top
  from flan_t5x import partitioning  # pylint: disable=g-import-not-at-top
  from flan_t5x import plan_report  # pylint: disable=g-import-not-at-top
  bound = _bound('train', 'model', 'partitioner', 'train_dataset_cfg', 'trainer_cls')
  model, cfg = bound['model'], bound['train_dataset_cfg']
  partitioner = bound.get('partitioner') or partitioning.PjitPartitioner(devices=devices)
  trainer_cls = bound.get('trainer_cls')
  if trainer_cls is None:
    from flan_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
    trainer_cls = trainer_lib.Trainer

  def compile_with(part, **overrides):
    trainer = trainer_cls(model=model, partitioner=part, batch_size=cfg.batch_size,
                          task_feature_lengths=cfg.task_feature_lengths, seed=0, **overrides)
    return aot_plan.plan_train(trainer, cfg.task_feature_lengths, tpu_slice.hbm_bytes_per_chip, pack=cfg.pack)

  configured = compile_with(partitioner)
  _progress(tpu_slice, configured)
  plans = [configured]
  if sweep:
    plans += aot_plan.sweep_train(configured, lambda parts, microbatches: compile_with(
        partitioning.PjitPartitioner(num_partitions=parts, logical_axis_rules=partitioner.logical_axis_rules,
                                     devices=devices), num_microbatches=microbatches),
                                  num_devices=len(devices),
                                  step_seconds=lambda plan: plan_report.step_seconds(plan, tpu_slice),
                                  report=lambda plan: _progress(tpu_slice, plan))
  return plans


def _plan_decode(job: str, devices, tpu_slice) -> list:
  from flan_t5x import aot_plan  # pylint: disable=g-import-not-at-top
  from flan_t5x import partitioning  # pylint: disable=g-import-not-at-top
  from flan_t5x.t5x_names import models as t5x_models  # pylint: disable=g-import-not-at-top
  bound = _bound(job, 'model', 'partitioner', 'dataset_cfg', 'decoding_config', 'batch_size', 'input_length',
                 'max_decode_length')
  model, cfg = bound['model'], bound.get('dataset_cfg')
  partitioner = bound.get('partitioner') or partitioning.PjitPartitioner(devices=devices)
  if cfg is not None and cfg.mixture_or_task_name is not None:  # a task's examples
    batch_size, lengths = cfg.batch_size, dict(cfg.task_feature_lengths or {})
  else:  # infer over a JSONL file: infer's own batch and lengths
    batch_size = bound.get('batch_size', 32)
    lengths = {'inputs': bound.get('input_length'), 'targets': bound.get('max_decode_length', 128)}
  lengths_from = 'the gin files'
  if not lengths.get('inputs') or not lengths.get('targets'):
    lengths_from = '--decode_lengths' if flags.FLAGS.decode_lengths else 'default (the gin leaves them to the data)'
    fallback = _parse_lengths(flags.FLAGS.decode_lengths)
    lengths = {key: lengths.get(key) or fallback[key] for key in ('inputs', 'targets')}
  # What the job decodes with: the files' DecodingConfig, else the model's decode_fn as T5X (beam search).
  decoding_config = bound.get('decoding_config') or t5x_models.bound_decoding_config(model)
  plan = aot_plan.plan_decode(model, partitioner, decoding_config,
                              batch_size, lengths['inputs'], lengths['targets'], tpu_slice.hbm_bytes_per_chip)
  plan.settings['lengths_from'] = lengths_from
  _progress(tpu_slice, plan)
  return [plan]


def _progress(tpu_slice, plan) -> None:
  print(f'[flan_t5x.plan] {tpu_slice.name}: compiled {plan.job} on mesh {plan.mesh} '
        f'{plan.settings.get("num_microbatches", "")} in {plan.compile_seconds:.0f} s', file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}')
  if not flags.FLAGS.gin_file:
    raise app.UsageError('At least one --gin_file is required, e.g. --gin_file=gin/flan_mix.gin.')
  if not flags.FLAGS.topology:
    raise app.UsageError(f'At least one --topology is required, one of {", ".join(tpu_slices.known_slices())}.')
  try:
    slices = [tpu_slices.parse_slice(name) for name in flags.FLAGS.topology]
    tpu_slices.require_libtpu()
  except (ValueError, tpu_slices.LibtpuMissing) as err:
    _fail(str(err))
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  for key, value in _LIBTPU_ENV.items():
    os.environ.setdefault(key, value)
  from flan_t5x import plan_report  # pylint: disable=g-import-not-at-top
  job = _parse_job_gin()
  reports = []
  for tpu_slice in slices:
    os.environ['TPU_ACCELERATOR_TYPE'] = tpu_slice.name
    devices = tpu_slices.topology_devices(tpu_slice)
    from flan_t5x import partitioning  # pylint: disable=g-import-not-at-top
    try:
      with partitioning.target_devices(devices):  # traced and compiled as the slice runs them
        plans = (_plan_train(devices, tpu_slice, flags.FLAGS.sweep) if job == 'train'
                 else _plan_decode(job, devices, tpu_slice))
    except ValueError as err:  # the configuration cannot be laid out on this slice (mesh, batch)
      report = plan_report.SliceReport(tpu_slice, job, [], refused=str(err).splitlines()[0])
    else:
      report = plan_report.SliceReport(tpu_slice, job, plans)
    print(report.text(), flush=True)
    reports.append(report)
  if flags.FLAGS.json:
    from flan_t5x import checkpoints  # pylint: disable=g-import-not-at-top
    payload = {'gin_files': flags.FLAGS.gin_file, 'gin_bindings': flags.FLAGS.gin_bindings,
               'reports': [report.as_json() for report in reports]}
    checkpoints.write_text_atomically(flags.FLAGS.json, json.dumps(payload, indent=1) + '\n')
  if all(report.refused for report in reports):
    sys.exit(1)


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _define_flags()
  _gin_utils.run(main)

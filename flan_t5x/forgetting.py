r"""The forgetting study: finetune several arms from one checkpoint, evaluate them all, report.

  python -m flan_t5x.forgetting --gin_file=gin/forgetting/demo_study.gin [--gin.STUDY_DIR="'runs/f'"]

From BASE_CHECKPOINT (flan-t5x, Hugging Face or T5X), or from a base model the study first trains
itself (`base_training`, e.g. a small T5 trained multi-task from scratch where no pretrained
weights are reachable; STUDY_DIR/base), each arm (single-task on the target, a
multi-task mixture holding the target, the target plus replay of an earlier mixture, or any arm
defined in gin) trains with the same budget as an ordinary `python -m flan_t5x.train` run in
STUDY_DIR/arms/<arm>; then `python -m flan_t5x.eval` evaluates the base and every arm on one
suite into STUDY_DIR/eval/<model>. The jobs run as child processes (jobs never import each
other), so each arm is a plain MODEL_DIR: TensorBoard, config.gin, resumable.

Re-running skips finished arms (STUDY_DIR/arms/<arm>/arm.json) and evaluations whose results
record the current checkpoint's fingerprint; an arm added later is trained and evaluated alone.
Outputs: results.json (the matrix and, per arm, target gain, forgetting per task, backward
transfer, held-out change, each with a paired bootstrap interval; sanity flags per model),
report.md (tables, flags, learning rates, commands, meanings), change.png (one panel per task,
error bars), curves.png, examples.md / examples.html (where each arm and the base differ most).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Mapping, Sequence

from absl import logging

from flan_t5x import adapters
from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import eval_records
from flan_t5x import forgetting_metrics
from flan_t5x import intervals
from flan_t5x import summaries

BASE = 'base'


# Gin files that train adapters (the base frozen, Adafactor's parameter scaling off): their arms get
# the study's adapter_learning_rate unless they set their own.
ADAPTER_GIN_FILES = ('lora.gin', 'prompt_tuning.gin')
# T5X's name (every run file imports `from t5x import utils`); the same configurable as flan_t5x.schedules'.
LEARNING_RATE_BINDING = 'utils.create_learning_rate_scheduler.base_learning_rate'


@dataclasses.dataclass(frozen=True)
class Arm:
  """One way to finetune: its extra gin files and bindings over the study's training files.

  learning_rate: this arm's peak learning rate; None takes the study's default for its kind
  (`adapter_learning_rate` for an arm using an ADAPTER_GIN_FILES file, else `learning_rate`).
  """
  name: str
  gin_files: Sequence[str] = ()
  bindings: Mapping[str, str] = dataclasses.field(default_factory=dict)
  learning_rate: float | None = None

  def __post_init__(self):
    if not self.name or self.name == BASE or '/' in self.name:
      raise ValueError(f'Arm name {self.name!r} must be non-empty, not {BASE!r}, without "/".')
    if self.learning_rate is not None and not self.learning_rate > 0:
      raise ValueError(f'Arm {self.name!r}: learning_rate must be positive, got {self.learning_rate}.')

  @property
  def trains_adapters(self) -> bool:
    return any(os.path.basename(path) in ADAPTER_GIN_FILES for path in self.gin_files)

  def resolved_learning_rate(self, learning_rate: float | None, adapter_learning_rate: float | None) -> float | None:
    """The rate this arm trains at (None: whatever its training gin files set)."""
    if self.learning_rate is not None:
      return self.learning_rate
    return adapter_learning_rate if self.trains_adapters else learning_rate


@dataclasses.dataclass(frozen=True)
class BaseTraining:
  """The base model, trained by the study itself before the arms: `steps` steps from scratch."""
  gin_files: Sequence[str]
  steps: int
  bindings: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f'BaseTraining.steps must be positive, got {self.steps}.')
    if not self.gin_files:
      raise ValueError('BaseTraining needs the gin files that train the base model.')


def _flags(gin_files: Sequence[str], bindings: Mapping[str, str]) -> list[str]:
  return [f'--gin_file={path}' for path in gin_files] + [f'--gin.{k}={v}' for k, v in bindings.items()]


def shell_word(arg: str) -> str:
  """`arg` as the README writes it for a shell: bare where safe, `--gin.X="'value'"` for a gin binding
  with quotes, shlex's quoting only where double quotes would not keep it literal."""
  if re.fullmatch(r"[\w@%+=:,./-]+", arg):
    return arg
  if re.search(r'["$`\\!]', arg):
    return shlex.quote(arg)
  if arg.startswith('--') and '=' in arg:
    name, value = arg.split('=', 1)
    return f'{name}="{value}"'
  return f'"{arg}"'


def _run(job: str, args: Sequence[str], log_path: str) -> str:
  """Runs `python -m flan_t5x.<job>`, its output appended to `log_path`; returns the command line."""
  command = [sys.executable, '-m', f'flan_t5x.{job}', *args]
  printable = 'python ' + ' '.join(shell_word(a) for a in command[1:])  # copy-pasteable into a shell
  print(f'[flan_t5x] study: {printable}\n[flan_t5x]   its output goes to {log_path} '
        f'(follow it with: tail -f {shlex.quote(log_path)})', flush=True)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  start = time.monotonic()
  with open(log_path, 'a') as log:
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
  if not done.returncode:
    print(f'[flan_t5x]   {job} finished in {time.monotonic() - start:.0f} s', flush=True)
  if done.returncode:
    with open(log_path) as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f'flan_t5x.{job} failed (exit {done.returncode}); log {log_path}:\n{tail}')
  return printable


def _train(study_dir: str, name: str, model_dir: str, gin_files: Sequence[str], bindings: Mapping[str, str],
           initial_checkpoint: str | None) -> str | None:
  """Trains into `model_dir` unless its marker says it finished with these settings; the command that trained it."""
  marker = os.path.join(model_dir, 'arm.json')
  record = {'name': name, 'gin_files': list(gin_files), 'bindings': dict(bindings),
            'base_checkpoint': initial_checkpoint}
  if os.path.exists(marker):
    with open(marker) as f:
      previous = json.load(f)
    if {k: previous.get(k) for k in record} != record:
      raise ValueError(f'{marker}: {name!r} was trained with other settings ({previous}); '
                       f'now {record}. Give the changed arm a new name or delete {model_dir}.')
    return previous.get('command')
  run_bindings = {**record['bindings'], 'MODEL_DIR': repr(model_dir), 'INITIAL_CHECKPOINT_PATH': repr(initial_checkpoint)}
  command = _run('train', _flags(record['gin_files'], run_bindings), os.path.join(study_dir, 'logs', f'train-{name}.log'))
  checkpoints.write_text_atomically(marker, json.dumps({**record, 'command': command}, indent=2) + '\n')
  return command


def _train_arm(study_dir: str, arm: Arm, base_checkpoint: str, train_gin_files: Sequence[str],
               train_bindings: Mapping[str, str], learning_rate: float | None) -> tuple[str, str | None]:
  """(MODEL_DIR, the command that trained it); `learning_rate` (if not None) overrides the gin files'."""
  model_dir = os.path.join(study_dir, 'arms', arm.name)
  rate = {LEARNING_RATE_BINDING: repr(learning_rate)} if learning_rate is not None else {}
  command = _train(study_dir, arm.name, model_dir, list(train_gin_files) + list(arm.gin_files),
                   {**train_bindings, **arm.bindings, **rate}, base_checkpoint)
  return model_dir, command


def _train_base(study_dir: str, base: BaseTraining) -> tuple[str, str | None]:
  """(the base MODEL_DIR, STUDY_DIR/base, and the command that trained it)."""
  model_dir = os.path.join(study_dir, BASE)
  command = _train(study_dir, BASE, model_dir, base.gin_files, {**base.bindings, 'TRAIN_STEPS': str(base.steps)},
                   None)
  return model_dir, command


def _evaluate(study_dir: str, model: str, checkpoint: str, eval_gin_files: Sequence[str],
              eval_bindings: Mapping[str, str]) -> tuple[str, str | None]:
  """(EVAL_OUTPUT_DIR, the command that evaluated this checkpoint there; None if not recorded)."""
  out = os.path.join(study_dir, 'eval', model)
  results = os.path.join(out, 'results.json')
  command_file = os.path.join(out, 'study_command.txt')
  fingerprint = adapters.fingerprint(checkpoint)  # what eval records (an adapter's covers its base)
  if os.path.exists(results):
    with open(results) as f:
      recorded = json.load(f).get('checkpoint')
    if recorded is not None and checkpoint_import.same_checkpoint(recorded, fingerprint):
      if not os.path.exists(command_file):
        return out, None
      with open(command_file) as f:
        return out, f.read().strip()
    logging.warning('%s holds results of another checkpoint; evaluating %s again.', out, checkpoint)
    for stale in glob.glob(os.path.join(out, '*.json')) + glob.glob(os.path.join(out, '*.jsonl')):
      os.remove(stale)
  bindings = {**eval_bindings, 'CHECKPOINT_PATH': repr(checkpoint), 'EVAL_OUTPUT_DIR': repr(out)}
  command = _run('eval', _flags(eval_gin_files, bindings), os.path.join(study_dir, 'logs', f'eval-{model}.log'))
  checkpoints.write_text_atomically(command_file, command + '\n')
  return out, command


def training_curve(model_dir: str) -> list[tuple[int, float]]:
  """(step, loss per token) from an arm's TensorBoard events."""
  return sorted(summaries.read_scalars(os.path.join(model_dir, 'train'), 'cross_ent_loss_per_token').items())


def run_study(*, study_dir: str, base_checkpoint: str | None = None, arms: Sequence[Arm], steps_per_arm: int,
              train_gin_files: Sequence[str], eval_gin_files: Sequence[str], target_tasks: Sequence[str],
              held_in_tasks: Sequence[str], held_out_tasks: Sequence[str] = (),
              train_bindings: Mapping[str, str] | None = None,
              eval_bindings: Mapping[str, str] | None = None,
              base_training: BaseTraining | None = None, learning_rate: float | None = None,
              adapter_learning_rate: float | None = 1e-3,
              bootstrap: intervals.BootstrapConfig | None = None, include_flagged: bool = False,
              reference_arm: str | None = None, correction: str = 'none') -> dict:
  """Trains the arms that are not finished, evaluates what is not evaluated, writes the report.

  Every arm trains `steps_per_arm` steps past the base checkpoint's step (TRAIN_STEPS counts the
  initial checkpoint's steps, as in T5X). The base is `base_checkpoint`, or exactly one of it and
  `base_training`: the model the study trains first into STUDY_DIR/base.
  Learning rates per arm (Arm.learning_rate, else by kind): `learning_rate` for full finetuning
  (None: the training gin files' rate) and `adapter_learning_rate` for adapter arms, whose
  Adafactor takes unscaled steps: a from-scratch rate such as 0.01 makes LoRA diverge.
  Every number gets a paired bootstrap interval (`bootstrap`, default 1,000 resamples, seed 0);
  arms with sanity flags are left out of the summary and chart unless `include_flagged`. Each arm
  is also compared with `reference_arm` (default: the first arm, e.g. single-task finetuning).
  `correction` adjusts the permutation p-values for multiple comparisons ('none', 'holm', 'bh').
  """
  intervals.adjust_p_values([], correction)  # a wrong name fails here, before any training
  names = [arm.name for arm in arms]
  if not arms or len(set(names)) != len(names):
    raise ValueError(f'The study needs arms with distinct names, got {names}.')
  reference_arm = reference_arm or names[0]
  if reference_arm not in names:
    raise ValueError(f'reference_arm {reference_arm!r} is none of the arms {names}.')
  if not target_tasks:
    raise ValueError('The study needs at least one target task (TARGET_TASKS).')
  study_dir = os.path.abspath(study_dir)
  if steps_per_arm < 1:
    raise ValueError(f'steps_per_arm must be positive, got {steps_per_arm}.')
  if (base_checkpoint is None) == (base_training is None):
    raise ValueError('Give the study exactly one base: BASE_CHECKPOINT (a checkpoint to start from) or '
                     f'base_training (a model it trains first); got {base_checkpoint!r} and {base_training!r}.')
  print(f'[flan_t5x] study {study_dir}: arms {", ".join(names)}, {steps_per_arm} steps each, then one '
        f'evaluation per model; each job runs quietly, its output in {os.path.join(study_dir, "logs")}/',
        flush=True)
  commands = []
  if base_training is not None:
    base_checkpoint, command = _train_base(study_dir, base_training)
    commands += [command] if command else []
  suite = forgetting_metrics.Suite(tuple(target_tasks), tuple(held_in_tasks), tuple(held_out_tasks))
  base_step = int(checkpoint_import.checkpoint_fingerprint(base_checkpoint).get('step') or 0)
  train_bindings = {**(train_bindings or {}), 'TRAIN_STEPS': str(base_step + steps_per_arm)}
  eval_dirs, model_dirs = {}, {}
  rates = {arm.name: arm.resolved_learning_rate(learning_rate, adapter_learning_rate) for arm in arms}
  for arm in arms:
    model_dirs[arm.name], command = _train_arm(study_dir, arm, base_checkpoint, train_gin_files, train_bindings,
                                               rates[arm.name])
    commands += [command] if command else []
  for model, checkpoint in [(BASE, base_checkpoint)] + list(model_dirs.items()):
    eval_dirs[model], command = _evaluate(study_dir, model, checkpoint, eval_gin_files, dict(eval_bindings or {}))
    commands += [command] if command else []
  trained = {**({BASE: base_checkpoint} if base_training else {}), **model_dirs}
  results = _analyse(suite, eval_dirs, {name: training_curve(path) for name, path in trained.items()}, base_step,
                     bootstrap or intervals.BootstrapConfig(), include_flagged, reference_arm, correction)
  # The commands behind every model and evaluation in these results, whichever run made them.
  results = {'base_checkpoint': base_checkpoint, 'suite': dataclasses.asdict(suite), **results,
             'learning_rates': rates, 'eval_dirs': eval_dirs, 'model_dirs': model_dirs, 'commands': commands}
  _write_outputs(study_dir, suite, results)
  return results


def _analyse(suite: forgetting_metrics.Suite, eval_dirs: Mapping[str, str], curves: Mapping[str, list],
             base_step: int, bootstrap: intervals.BootstrapConfig, include_flagged: bool, reference_arm: str,
             correction: str = 'none') -> dict:
  """The matrix, derived numbers against the base and the reference arm, their intervals, sanity flags."""
  matrix = {model: forgetting_metrics.read_eval_dir(path) for model, path in eval_dirs.items()}
  primary = {task: forgetting_metrics.primary_metric(task, matrix[BASE][task]) for task in suite.all}
  loaded = forgetting_metrics.load_scores(eval_dirs, suite)
  derived = forgetting_metrics.derive(matrix, suite, BASE)
  flags = {model: forgetting_metrics.model_flags(path, suite, curves.get(model), 0 if model == BASE else base_step)
           for model, path in eval_dirs.items()}
  arms_only = {model: row for model, row in matrix.items() if model != BASE}
  versus = {'reference': reference_arm, 'arms': forgetting_metrics.derive(arms_only, suite, reference_arm),
            'uncertainty': forgetting_metrics.uncertainty({m: v for m, v in loaded.items() if m != BASE}, suite,
                                                          primary, bootstrap, reference_arm, correction)}
  return {'matrix': matrix, 'arms': derived,
          'uncertainty': forgetting_metrics.uncertainty(loaded, suite, primary, bootstrap, BASE, correction),
          'flags': flags, 'include_flagged': include_flagged,
          'summarized_arms': forgetting_metrics.shown_arms(derived, flags, include_flagged),
          'versus_reference': versus, 'curves': dict(curves),
          'differences': forgetting_metrics.differences(loaded, suite, primary, list(derived), BASE)}


def _write_outputs(study_dir: str, suite: forgetting_metrics.Suite, results: dict) -> None:
  """results.json, report.md, change.png, curves.png, examples.md and examples.html."""
  differences, curves = results.pop('differences'), results.pop('curves')
  checkpoints.write_text_atomically(os.path.join(study_dir, 'results.json'), json.dumps(results, indent=2) + '\n')
  shown, versus = results['summarized_arms'], results['versus_reference']
  report = forgetting_metrics.report_markdown(
      results['matrix'], results['arms'], suite, BASE, results['commands'], uncertainty=results['uncertainty'],
      flags=results['flags'], include_flagged=results['include_flagged'], learning_rates=results['learning_rates'],
      sections=[forgetting_metrics.versus_markdown(versus['reference'], versus['arms'], versus['uncertainty'],
                                                   suite, shown)])
  checkpoints.write_text_atomically(os.path.join(study_dir, 'report.md'), report)
  colours = forgetting_metrics.arm_colours(list(results['eval_dirs']))
  forgetting_metrics.change_chart({arm: results['arms'][arm] for arm in shown}, suite,
                                  os.path.join(study_dir, 'change.png'), results['uncertainty'], colours)
  forgetting_metrics.curves_chart(curves, os.path.join(study_dir, 'curves.png'), colours)
  eval_records.write_differences(differences, os.path.join(study_dir, 'examples'))
  print(report, flush=True)
  print(f'[flan_t5x] study written to {study_dir} (results.json, report.md, change.png, curves.png, '
        'examples.md, examples.html)', flush=True)


def main(argv: list[str]) -> None:
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.start_run('%STUDY_DIR')
  from flan_t5x import forgetting as forgetting_module  # pylint: disable=g-import-not-at-top  (gin binds it)
  gin.get_configurable(forgetting_module.run_study)()


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

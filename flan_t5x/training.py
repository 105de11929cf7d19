"""The training loop, `train()`: plain Python with T5X's arguments (gin binds it at the entry points:
`python -m flan_t5x.train`, flan_t5x/train.py, and T5X's `train_script.train`,
flan_t5x/t5x_names/train_script.py)."""

from __future__ import annotations

import collections
import dataclasses
import os
import random
from typing import Any, Callable, Mapping, Sequence

import jax
from absl import logging

from flan_t5x import actions as actions_lib
from flan_t5x import adapters
from flan_t5x import checkpoint_import
from flan_t5x import checkpoint_integrity
from flan_t5x import checkpoints
from flan_t5x import config_checks
from flan_t5x import data
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import progress as progress_lib
from flan_t5x import preemption
from flan_t5x import run_lock
from flan_t5x import summaries
from flan_t5x import task_vocab
from flan_t5x import trainer as trainer_lib
from flan_t5x import t5x_names
from flan_t5x.t5x_names import models as t5x_models


def _progress(total: int, initial: int, enabled: bool) -> progress_lib.Progress | None:
  """A bar on a terminal; None elsewhere (logs get LogMetrics' plain lines instead)."""
  if not enabled or not progress_lib.on_terminal():
    return None
  return progress_lib.Progress(total, 'train', 'step', initial, lines=False)


def _latest_saved_step(model_dir: str) -> int | None:
  """The newest complete checkpoint_<step> in MODEL_DIR (orbax renames a save into place when complete)."""
  return max(checkpoints.saved_steps(model_dir), default=None)


def _check_steps_to_train(model_dir: str, initial_checkpoint_path: str | None, total_steps: int) -> None:
  """A new run that would train no step is a configuration error, found before any work.

  A run with a checkpoint in MODEL_DIR resumes (and is a no-op, saying so, once it is finished).
  """
  if _latest_saved_step(model_dir) is not None:
    return
  start_step, source = 0, 'a freshly initialized model starts at step 0'
  if initial_checkpoint_path:
    start_step = checkpoint_import.checkpoint_fingerprint(initial_checkpoint_path)['step'] or 0
    source = f'INITIAL_CHECKPOINT_PATH {initial_checkpoint_path} is at step {start_step}'
  if total_steps <= start_step:
    raise ValueError(
        f'TRAIN_STEPS={total_steps} would train no step: {source}. TRAIN_STEPS counts the initial '
        f"checkpoint's steps, as in T5X (training runs from step {start_step} to TRAIN_STEPS): to train N "
        f'steps set TRAIN_STEPS={start_step}+N, e.g. --gin.TRAIN_STEPS={start_step + max(total_steps, 1)}, or '
        f'--gin.TRAIN_STEPS_RELATIVE=N --gin.TRAIN_STEPS=None.')


def _restore_or_init(trainer: trainer_lib.Trainer, checkpointer: checkpoints.Checkpointer,
                     restore_cfg: checkpoints.RestoreCheckpointConfig, seed: int | None):
  """T5X order: latest in MODEL_DIR, else INITIAL_CHECKPOINT_PATH (params only, through T5X's
  assignment_map / fallback_to_scratch when set), else fresh.

  Returns (state, run state, saved input position or None, what happened).
  """
  # A T5X run's MODEL_DIR is continued in place from T5X's newest checkpoint: its parameters and step.
  # Its optimizer state and dataset position are T5X's formats, not read: Adafactor's moments start
  # afresh and the data from its start (said in the origin). Later saves are flan_t5x's, beside T5X's.
  initial_checkpoint_path = restore_cfg.path
  t5x_step_dir = checkpoint_import.newest_t5x_step_dir(checkpointer.model_dir)
  restored = None if t5x_step_dir else checkpointer.restore_latest(restore_cfg.fallback_to_previous)
  if restored is not None:
    adapters.attach_base(trainer, restored.run_state, checkpointer.model_dir)  # PEFT: its base model
    return (restored.state, restored.run_state, restored.input_state,
            f'resumed from {checkpointer.model_dir} at step {int(restored.state.step)}')
  run_state = checkpoints.RunState(seed=seed if seed is not None else random.SystemRandom().randrange(2**31))
  trainer.seed = run_state.seed
  if t5x_step_dir and trainer.is_peft:
    raise ValueError(f'{t5x_step_dir} is a T5X checkpoint: LoRA / prompt tuning starts from it as '
                     'INITIAL_CHECKPOINT_PATH in a MODEL_DIR of its own.')
  if t5x_step_dir:
    params, step = checkpoint_import.restore_params(t5x_step_dir, trainer.abstract_state.params,
                                                    trainer.model.config)
    return (trainer.state_from_params(params, step), run_state, None,
            f"resumed T5X's {t5x_step_dir} at step {step} (its parameters and step; T5X's optimizer state and "
            "dataset position are not read: Adafactor's moments start afresh and the data from its start)")
  mapped = restore_cfg.assignment_map is not None or restore_cfg.fallback_to_scratch
  if initial_checkpoint_path and trainer.is_peft and mapped:
    raise ValueError('utils.RestoreCheckpointConfig.assignment_map / fallback_to_scratch: LoRA and prompt tuning '
                     'read their base model whole; apply the map in a full finetuning run (or convert the '
                     'checkpoint with python -m flan_t5x.convert) and adapt that.')
  if initial_checkpoint_path and trainer.is_peft:
    return (adapters.initial_state(trainer, initial_checkpoint_path, run_state), run_state, None,
            f'adapters on {initial_checkpoint_path}')
  if trainer.is_peft:
    raise ValueError('LoRA / prompt tuning needs INITIAL_CHECKPOINT_PATH: the base model to adapt.')
  if initial_checkpoint_path and mapped:
    params, step, summary = checkpoint_import.restore_params_mapped(
        initial_checkpoint_path, trainer.abstract_state.params, restore_cfg.assignment_map,
        restore_cfg.fallback_to_scratch, lambda: trainer.init_state().params)
    return (trainer.state_from_params(params, step), run_state, None,
            f'initialized from {initial_checkpoint_path} ({summary})')
  if initial_checkpoint_path:
    params, step = checkpoint_import.restore_params(initial_checkpoint_path, trainer.abstract_state.params,
                                                    trainer.model.config)
    return (trainer.state_from_params(params, step), run_state, None,
            f'initialized from {initial_checkpoint_path}')
  return trainer.init_state(), run_state, None, 'initialized from scratch'


def _check_batch_size(run_state: checkpoints.RunState, batch_size: int, model_dir: str) -> None:
  """The saved input position counts batches of the BATCH_SIZE that trained them: another one is refused."""
  if run_state.batch_size is None:
    run_state.batch_size = batch_size  # fresh, or saved before the batch size was recorded
  elif run_state.batch_size != batch_size:
    raise ValueError(
        f'{model_dir} was trained with BATCH_SIZE={run_state.batch_size}; this run has BATCH_SIZE={batch_size}. '
        'Its saved input position and step count are in batches of the old size, so resuming would read '
        f'other data. Resume with --gin.BATCH_SIZE={run_state.batch_size} (to change the memory per device, '
        'set trainer.Trainer.num_microbatches instead), or start a new MODEL_DIR with '
        'INITIAL_CHECKPOINT_PATH set to this one.')


def _train_inputs(dataset_cfg: data.DatasetConfig, model: models.EncoderDecoderModel,
                  run_state: checkpoints.RunState, saved_position: dict[str, bytes] | None) -> data.InputIterator:
  """This host's input iterator, at the position where the restored run stopped."""
  inputs = data.InputIterator(data.get_dataset(dataset_cfg, model.feature_converter(pack=dataset_cfg.pack),
                                               seed=run_state.seed, num_epochs=None))
  if saved_position:
    inputs.restore(saved_position)
  elif run_state.batches_consumed:
    logging.warning('No saved input position for this process in the checkpoint (saved without '
                    'save_dataset, or by a different number of hosts): replaying %d batches.',
                    run_state.batches_consumed)
    print(f'[flan_t5x] replaying {run_state.batches_consumed} consumed batches to restore the input '
          'position (no saved position fits this run)', flush=True)
    inputs.skip(run_state.batches_consumed)
  return inputs


def _validation_action(trainer, model, cfg: data.DatasetConfig, seed: int, period: int, eval_steps,
                       model_dir: str, terminate_on_nan=()) -> actions_lib.ValidationLoss | None:
  if not data.has_split(cfg):
    logging.warning('No validation split %r: skipping evaluation.', cfg.split)
    return None
  converter = model.feature_converter(pack=cfg.pack)
  batches = lambda: data.InputIterator(data.get_dataset(cfg, converter, seed=seed, num_epochs=1))
  return actions_lib.ValidationLoss(period, batches, eval_steps,
                                    summaries.SummaryWriter(os.path.join(model_dir, 'validation')), terminate_on_nan)


def _inference_eval_action(model, partitioner, cfg, period: int, model_dir: str,
                           full_params: Callable, json_write_n_results: int | None,
                           should_stop: Callable[[], bool]) -> actions_lib.InferenceEvaluation:
  runner = inference.InferenceRunner(model, partitioner, cfg.decoding_config)

  def evaluate(params, step):
    results, records = evaluation.evaluate_params(model, partitioner, full_params(params), cfg, runner,
                                                  should_stop)
    if jax.process_index() == 0:  # T5X's files, as T5X's training writes them (JSON_WRITE_N_RESULTS)
      written = {task: rows[:json_write_n_results] for task, rows in records.items()}
      evaluation.write_t5x_files(os.path.join(model_dir, 'inference_eval'), results, written, step)
    return evaluation.scalars(results)
  return actions_lib.InferenceEvaluation(period, evaluate,
                                     summaries.SummaryWriter(os.path.join(model_dir, 'inference_eval')))


def _t5x_train_actions(actions) -> list:
  """T5X's train `actions`: TerminateOnNanAction under 'TRAIN_EVAL' (anything else is refused)."""
  found = []
  for mode, listed in (actions or {}).items():
    for action in listed:
      if mode != 'TRAIN_EVAL' or not isinstance(action, actions_lib.TerminateOnNanAction):
        raise ValueError(f"train_script.train.actions[{mode!r}] = {action!r}: flan_t5x runs "
                         "{'TRAIN_EVAL': [@trainer.TerminateOnNanAction()]} only; for early stopping use "
                         'train_script.train.early_stopping (flan_t5x.actions.EarlyStoppingConfig).')
      found.append(action)
  return found


def _fall_back_to_scratch(checkpoint_cfg: checkpoints.CheckpointConfig) -> checkpoints.CheckpointConfig:
  """T5X's RestoreCheckpointConfig.fallback_to_scratch: an INITIAL_CHECKPOINT_PATH holding no
  checkpoint starts the model from scratch (said), instead of failing."""
  restore = checkpoint_cfg.restore
  if not (restore.fallback_to_scratch and restore.path):
    return checkpoint_cfg
  try:
    checkpoint_import.detect_format(restore.path)
    return checkpoint_cfg
  except FileNotFoundError:
    if jax.process_index() == 0:
      print(f'[flan_t5x] INITIAL_CHECKPOINT_PATH={restore.path} holds no checkpoint: starting from scratch '
            '(utils.RestoreCheckpointConfig.fallback_to_scratch = True)', flush=True)
    return dataclasses.replace(checkpoint_cfg, restore=dataclasses.replace(restore, path=None))


def _warn_if_t5x_refuses_periods(eval_period, checkpoint_period, gc_period) -> None:
  """T5X requires the checkpoint, eval and GC periods to be multiples of the smallest of them."""
  periods = {'EVAL_PERIOD': eval_period, 'utils.SaveCheckpointConfig.period': checkpoint_period,
             'gc_period': gc_period}
  given = {name: p for name, p in periods.items() if p}
  if not given:
    return
  smallest = min(given.values())
  if any(p % smallest for p in given.values()):
    message = (f'{", ".join(f"{n}={p}" for n, p in given.items())}: T5X refuses these (the periods must be '
               'multiples of the smallest of them); flan_t5x runs them.')
    logging.warning(message)
    if jax.process_index() == 0:
      print(f'[flan_t5x] warning: {message}', flush=True)


def _inference_eval_config(inference_eval_cfg, infer_eval_dataset_cfg, num_examples, decoding_config):
  """flan_t5x's InferenceEvalConfig, or T5X's infer_eval DatasetConfig turned into one (decoded as
  T5X would: `decoding_config`)."""
  if infer_eval_dataset_cfg is None:
    return inference_eval_cfg
  if inference_eval_cfg is not None:
    raise ValueError('Both train.inference_eval_cfg and train.infer_eval_dataset_cfg are set: keep one '
                     '(train_script.train.infer_eval_dataset_cfg = None turns T5X\'s off).')
  cfg = infer_eval_dataset_cfg
  if cfg.use_cached:  # flan_t5x's evaluator reads the tasks uncached: the same examples
    logging.warning('Inference evaluation reads %s uncached (USE_CACHED_TASKS applies to training).',
                    cfg.mixture_or_task_name)
    cfg = dataclasses.replace(cfg, use_cached=False)
  data.check_decoding_dataset(cfg, 'infer_eval/utils.DatasetConfig')
  return evaluation.InferenceEvalConfig(cfg.mixture_or_task_name, cfg.split, cfg.task_feature_lengths,
                                        cfg.batch_size, num_examples, decoding_config=decoding_config,
                                        module=cfg.module)


def train(*, model: models.EncoderDecoderModel, model_dir: str,
          train_dataset_cfg: data.DatasetConfig,
          train_eval_dataset_cfg: data.DatasetConfig | None = None,
          checkpoint_cfg: checkpoints.CheckpointConfig | None = None,
          partitioner: partitioning.PjitPartitioner | None = None,
          trainer_cls: Callable[..., trainer_lib.Trainer] = trainer_lib.Trainer,
          total_steps: int | None, eval_steps: int | None = 20, eval_period: int | None = 1000,
          random_seed: int | None = None, log_period: int = 10, use_progress_bar: bool = True,
          stop_at_loss: float | None = None,
          inference_eval_cfg: evaluation.InferenceEvalConfig | None = None,
          early_stopping: actions_lib.EarlyStoppingConfig | None = None,
          history_length: int = 1000,
          infer_eval_dataset_cfg: data.DatasetConfig | None = None,
          infer_eval_num_examples: int | None = None,
          infer_eval_json_write_n_results: int | None = None,
          relative_steps: int | None = None,
          use_hardware_rng: bool = False,
          stats_period: int | None = None, gc_period: int = 0, concurrent_metrics: bool = True,
          run_eval_before_training: bool = False, use_orbax: bool = True,
          summarize_config_fn: Callable[..., None] | None = None,
          actions: Mapping[str, Sequence[Any]] | None = None,
          inference_evaluator_cls: type | None = None,
          on_start: Callable[[], None] | None = None) -> tuple[int, list[dict[str, Any]]]:
  """Trains until `total_steps`, resuming from MODEL_DIR if it holds a checkpoint.

  Every process of a multi-host run calls this; each reads its own shard of the data.
  Periodic work is a list of actions (flan_t5x.actions): log every `log_period` steps,
  validation loss and `inference_eval_cfg` (decoding a mixture, off by default) every
  `eval_period`, `early_stopping` after each evaluation, checkpoints every
  `checkpoint_cfg.save.period` and at the end. The host never waits on the device between
  those. `stop_at_loss` ends training at the first log whose per-token loss is at or below it.
  `use_progress_bar` draws a bar when stderr is a terminal; elsewhere each log is a plain line.

  T5X's arguments: `infer_eval_dataset_cfg` (T5X's inference evaluation, run by flan_t5x's
  evaluator on at most `infer_eval_num_examples` examples per task; exclusive with
  `inference_eval_cfg`; `infer_eval_json_write_n_results`: T5X's JSON_WRITE_N_RESULTS, the examples
  per task written to inference_eval/<task>-<step>.jsonl, None for all), `relative_steps` (train that many steps past the step the run first
  started from; recorded, so a restart does not extend it), `use_hardware_rng` (False only),
  `stats_period` (steps between train scalars: log_period's value when given), `gc_period`,
  `run_eval_before_training`, `inference_evaluator_cls` (seqio.Evaluator only), `summarize_config_fn`
  (called with (model_dir, None, step) once the run starts), `actions` ({'TRAIN_EVAL': [TerminateOnNanAction(...)]} only), `concurrent_metrics`
  (either value: flan_t5x always reads metrics one step late, results are the same) and
  `use_orbax` (True only). A file breaking T5X's rule that the checkpoint, eval and GC periods be
  multiples of the smallest of them runs here, with a warning that T5X refuses it.

  `on_start` runs once the run is accepted (MODEL_DIR locked, checkpoint restored and checked),
  before the first step: a refused run writes nothing to MODEL_DIR.

  A TRAIN_STEPS at or below the step a new run starts from (INITIAL_CHECKPOINT_PATH's, else 0) is
  an error; a MODEL_DIR already at TRAIN_STEPS is left as it is.
  Returns (final step, the last `history_length` logged summaries of this invocation).
  Raises FloatingPointError on a non-finite loss or parameters, without saving that state, and
  preemption.Preempted after SIGTERM / SIGINT, once the step reached is saved on every host. A
  signal during the inference evaluation stops it before its next decode batch (single-process
  runs) and saves at once.
  """
  config_checks.check_arguments(train, locals())  # wrong types fail here, before any work
  terminate_on_nan = _t5x_train_actions(actions)
  t5x_names.check_evaluator_cls(inference_evaluator_cls, 'train_script.train')
  infer_eval_num_examples = t5x_names.examples_per_task(infer_eval_num_examples, 'EVALUATOR_NUM_EXAMPLES')
  if infer_eval_json_write_n_results is None:
    infer_eval_json_write_n_results = t5x_names.seqio_binding('seqio.JSONLogger', 'write_n_results')
  if not use_orbax:
    raise ValueError('train_script.train.use_orbax = False: flan_t5x always writes orbax checkpoints (T5X\'s '
                     'default); remove the binding.')
  if gc_period < 0:
    raise ValueError(f'train_script.train.gc_period must be >= 0, got {gc_period}.')
  log_period = stats_period or log_period
  checkpoint_cfg = _fall_back_to_scratch(checkpoint_cfg or checkpoints.CheckpointConfig())
  _warn_if_t5x_refuses_periods(eval_period, checkpoint_cfg.save.period, gc_period)
  dataset_cfgs = {name: cfg for name, cfg in (('train/DatasetConfig', train_dataset_cfg),
                                               ('train_eval/DatasetConfig', train_eval_dataset_cfg)) if cfg}
  config_checks.check_train_values(total_steps, {name: cfg.batch_size for name, cfg in dataset_cfgs.items()})
  config_checks.check_run_values(checkpoint_cfg.save.period,
                                 {name: cfg.task_feature_lengths for name, cfg in dataset_cfgs.items()})
  partitioner = partitioner or partitioning.PjitPartitioner()
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  if use_hardware_rng:
    raise ValueError('USE_HARDWARE_RNG = True: flan_t5x always uses the software RNG, which keeps data order '
                     'and dropout identical across restarts; set it to False.')
  if (total_steps is None) == (relative_steps is None):
    raise ValueError(f'TRAIN_STEPS = {total_steps} and TRAIN_STEPS_RELATIVE = {relative_steps}: set exactly one '
                     '(TRAIN_STEPS counts the initial checkpoint\'s steps, TRAIN_STEPS_RELATIVE counts from it), '
                     'e.g. --gin.TRAIN_STEPS=1194000 --gin.TRAIN_STEPS_RELATIVE=None.')
  if relative_steps is not None and relative_steps < 1:
    raise ValueError(f'TRAIN_STEPS_RELATIVE must be a positive number of steps or None, got {relative_steps}.')
  finished_step = _latest_saved_step(model_dir)
  # TRAIN_STEPS_RELATIVE's target is recorded in the checkpoint: the loop below stops at it. A run is
  # finished only when that checkpoint is intact; a damaged, empty or manifest-less one goes to the
  # restore below, which says what is wrong with it.
  if (total_steps is not None and finished_step is not None and finished_step >= total_steps
      and checkpoint_integrity.is_intact(os.path.join(model_dir, f'{checkpoints.STEP_PREFIX}_{finished_step}'))):
    if jax.process_index() == 0:
      print(f'[flan_t5x] MODEL_DIR={model_dir} already holds step {finished_step} (TRAIN_STEPS={total_steps}): '
            'nothing to train, nothing written. Raise TRAIN_STEPS to train further.', flush=True)
    return finished_step, []
  if log_period < 1:
    raise ValueError(f'log_period must be at least 1, got {log_period}.')
  inference_eval_cfg = _inference_eval_config(inference_eval_cfg, infer_eval_dataset_cfg, infer_eval_num_examples,
                                              t5x_models.bound_decoding_config(model))
  if early_stopping is not None and not eval_period:
    raise ValueError('early_stopping needs an EVAL_PERIOD (it reads the evaluation metrics).')
  for cfg, where in ((train_dataset_cfg, 'train'), (train_eval_dataset_cfg, 'train_eval')):
    if cfg is not None and cfg.task_feature_lengths is None:
      raise ValueError(f'{where}/utils.DatasetConfig.task_feature_lengths is None: training batches need '
                       "TASK_FEATURE_LENGTHS, e.g. {'inputs': 1024, 'targets': 128}.")
  for cfg in (train_dataset_cfg, train_eval_dataset_cfg):
    if cfg is not None:
      config_checks.check_task_name(cfg.mixture_or_task_name, cfg.module)
      task_vocab.check_vocabularies(model, cfg.mixture_or_task_name, cfg.module)
      data.check_local_files(cfg)  # a bad row or a missing column: its file and line, before MODEL_DIR
  if total_steps is not None:
    _check_steps_to_train(model_dir, checkpoint_cfg.restore.path, total_steps)
  os.makedirs(model_dir, exist_ok=True)
  lock = run_lock.lock_model_dir(model_dir)  # before anything in MODEL_DIR is touched
  progress, checkpointer, periodic = None, None, []  # what `finally` closes
  watcher = preemption.Watcher().install()  # SIGTERM / SIGINT: save this step and stop
  preempted = False
  try:
    trainer = trainer_cls(model=model, partitioner=partitioner, batch_size=train_dataset_cfg.batch_size,
                          task_feature_lengths=train_dataset_cfg.task_feature_lengths,
                          seed=random_seed if random_seed is not None else 0)
    checkpointer = checkpoints.Checkpointer(model_dir, checkpoint_cfg.save, trainer.abstract_state,
                                            optimizer_name=type(trainer.optimizer_def).__name__)
    state, run_state, saved_position, origin = _restore_or_init(trainer, checkpointer, checkpoint_cfg.restore,
                                                                random_seed)
    trainer.seed = run_state.seed
    _check_batch_size(run_state, train_dataset_cfg.batch_size, checkpointer.model_dir)
    start_step = int(state.step)
    if origin.startswith("resumed T5X's") and total_steps is not None and start_step >= total_steps:
      if jax.process_index() == 0:  # nothing to write beside T5X's own checkpoint
        print(f'[flan_t5x] MODEL_DIR={model_dir} already holds step {start_step} (T5X\'s; TRAIN_STEPS='
              f'{total_steps}): nothing to train, nothing written. Raise TRAIN_STEPS to train further.', flush=True)
      return start_step, []
    if relative_steps is not None:
      if run_state.relative_total_steps is None:  # first start: relative to where it starts from
        run_state.relative_total_steps = start_step + relative_steps
      total_steps = run_state.relative_total_steps
    if on_start is not None:
      on_start()
    if summarize_config_fn is not None and jax.process_index() == 0:
      summarize_config_fn(model_dir, None, start_step)
    logging.info('Model %s; %s (seed %d).', model_dir, origin, run_state.seed)
    if jax.process_index() == 0:
      print(f'[flan_t5x] MODEL_DIR={model_dir}: {origin}; training to step {total_steps}.', flush=True)
      if trainer.is_peft:
        print(f'[flan_t5x] {adapters.summary_line(model.config, state.params, trainer.frozen_params)}', flush=True)
    inputs = _train_inputs(train_dataset_cfg, model, run_state, saved_position)

    progress = _progress(total_steps, start_step, use_progress_bar and jax.process_index() == 0)
    logger = actions_lib.LogMetrics(log_period, summaries.SummaryWriter(os.path.join(model_dir, 'train')), progress,
                                print_lines=progress is None)
    periodic.append(logger)
    if train_eval_dataset_cfg is not None and eval_period:
      validation = _validation_action(trainer, model, train_eval_dataset_cfg, run_state.seed, eval_period,
                                      eval_steps, model_dir, terminate_on_nan)
      periodic += [validation] if validation else []
    if inference_eval_cfg is not None and eval_period:
      periodic.append(_inference_eval_action(model, partitioner, inference_eval_cfg, eval_period, model_dir,
                                             trainer.full_params, infer_eval_json_write_n_results,
                                             lambda: watcher.signal_name is not None))
    if early_stopping is not None:
      periodic.append(actions_lib.EarlyStopping(eval_period, early_stopping))
    periodic.append(actions_lib.SaveCheckpoint(checkpoint_cfg.save.period, logger,
                                               checkpoint_cfg.save.checkpoint_steps))
    if gc_period:
      periodic.append(actions_lib.GarbageCollect(gc_period))

    loop = actions_lib.Loop(step=start_step, total_steps=total_steps, state=state, run_state=run_state,
                        trainer=trainer, checkpointer=checkpointer, inputs=inputs,
                        metrics=actions_lib.MetricsAccumulator(), history=collections.deque(maxlen=history_length),
                        last_saved_step=start_step if checkpointer.latest_step() == start_step else None)
    if run_eval_before_training:  # T5X's: the evaluations once at the start step, before training
      try:
        for action in periodic:
          if isinstance(action, (actions_lib.ValidationLoss, actions_lib.InferenceEvaluation)):
            action.run(loop)
      except evaluation.Interrupted:
        preempted = True
    stop_reason = None
    while not preempted and loop.step < total_steps:
      batch = next(inputs)
      loop.state, step_metrics = trainer.train_step(loop.state, batch)
      loop.metrics.add(step_metrics)
      loop.step += 1
      run_state.batches_consumed += 1
      logger.after_dispatch(loop)
      checkpointer.poll()
      if progress is not None:
        progress.update(1)
      try:
        for action in periodic:
          action.maybe_run(loop)
      except actions_lib.StopTraining as stop:
        stop_reason = str(stop)
      except evaluation.Interrupted as stop:  # SIGTERM while decoding: save this step now, not after
        logging.info('Inference evaluation interrupted at step %d: %s', loop.step, stop)
        preempted = True
        break
      if stop_at_loss is not None and loop.history and (
          loop.history[-1]['cross_ent_loss_per_token'] <= stop_at_loss):
        stop_reason = (f'loss/token {loop.history[-1]["cross_ent_loss_per_token"]:.4f} at step '
                       f'{loop.history[-1]["step"]} <= {stop_at_loss}')
      if stop_reason:
        break
      if watcher.stop_at(loop.step) and not loop.is_last_step:  # every host asks, they agree on the step
        preempted = True
        break
    if stop_reason and jax.process_index() == 0:
      progress_lib.say(f'[flan_t5x] stopping early at step {loop.step}: {stop_reason}')
    logger.run(loop)  # steps since the last log (training stopped early), if any
    logger.flush(loop)
    if loop.last_saved_step != loop.step:
      actions_lib.SaveCheckpoint(None, logger).run(loop)
  finally:
    if progress is not None:
      progress.close()
    try:
      if checkpointer is not None:
        checkpointer.close()
      for action in periodic:
        action.close()
    finally:
      watcher.uninstall()  # after the last save has finished: a second signal until then exits at once
      if lock is not None:
        lock.release()
  if preempted:  # the checkpoint of this step is complete (closed above), its manifest included
    raise preemption.Preempted(loop.step, watcher.signal_name, model_dir)
  if jax.process_index() == 0:
    print(f'[flan_t5x] done at step {loop.step}. Checkpoints: {model_dir}/{checkpoints.STEP_PREFIX}_<step>; '
          f'TensorBoard: tensorboard --logdir {model_dir}', flush=True)
  return loop.step, list(loop.history)

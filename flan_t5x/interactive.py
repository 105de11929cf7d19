"""A model to train, query and evaluate from Python (notebooks), after T5X's InteractiveModel.

  model = InteractiveModel.from_gin_files(['gin/demo.gin'], ["MODEL_DIR = '/tmp/demo'"])
  model.train_loop(300)                                  # resumes from MODEL_DIR's newest checkpoint
  model.predict(['Summarize: Ann: hi Bob: hello'])      # -> ['...']
  model.score(['Rate it: great food'], ['5'])           # log-likelihoods
  results = model.evaluate('demo_heldout', max_examples=50)

The pieces are the engine's own: `trainer.Trainer` steps, `checkpoints.Checkpointer` (the same
checkpoints, input position and resume as `python -m flan_t5x.train`), `data` batches, the
`actions` metrics logger (TensorBoard under MODEL_DIR/train), `inference.InferenceRunner` decoding
and `evaluation` metrics. Gin is read only by `from_gin_files`; the class takes plain objects.
"""

from __future__ import annotations

import collections
import os
import random
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from flan_t5x import actions
from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import decoding
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import run_lock
from flan_t5x import summaries
from flan_t5x import task_vocab
from flan_t5x import trainer as trainer_lib

# Macros read by `from_gin_files` (T5X's names; the run gin files define them).
_GIN_MACROS = ('MODEL_DIR', 'TASK_FEATURE_LENGTHS', 'BATCH_SIZE', 'INITIAL_CHECKPOINT_PATH', 'RANDOM_SEED',
               'MIXTURE_OR_TASK_NAME')


class InteractiveModel:
  """One model, its train state and its MODEL_DIR; every method works on the current parameters.

  On creation the state comes from MODEL_DIR's newest checkpoint, else `initial_checkpoint_path`
  (a flan-t5x, Hugging Face or T5X checkpoint), else fresh parameters, in T5X's order.
  `trainer_cls` (e.g. gin's configured Trainer) builds the trainer; `learning_rate_fn`, when given,
  is passed to it (default: a constant 1e-3 for the plain Trainer).
  """

  def __init__(self, *, model: models.EncoderDecoderModel, model_dir: str,
               task_feature_lengths: Mapping[str, int], batch_size: int,
               learning_rate_fn: Callable | float | None = None,
               trainer_cls: Callable[..., trainer_lib.Trainer] | None = None,
               partitioner: partitioning.PjitPartitioner | None = None,
               initial_checkpoint_path: str | None = None, seed: int | None = 0,
               mixture_or_task_name: str | None = None,
               save_config: checkpoints.SaveCheckpointConfig | None = None,
               decoding_config: decoding.DecodingConfig | None = None):
    self.model = model
    self.model_dir = os.path.abspath(os.path.expanduser(model_dir))
    self.task_feature_lengths = dict(task_feature_lengths)
    self.mixture_or_task_name = mixture_or_task_name
    self.partitioner = partitioner or partitioning.PjitPartitioner()
    # A gin-configured Trainer brings its schedule; an explicit learning_rate_fn replaces it.
    schedule = {} if learning_rate_fn is None and trainer_cls is not None else {
        'learning_rate_fn': 1e-3 if learning_rate_fn is None else learning_rate_fn}
    self.trainer = (trainer_cls or trainer_lib.Trainer)(
        model=model, partitioner=self.partitioner, batch_size=batch_size,
        task_feature_lengths=self.task_feature_lengths, seed=seed or 0, **schedule)
    if self.trainer.is_peft:
      raise ValueError('InteractiveModel trains full models; run LoRA / prompt tuning with '
                       '`python -m flan_t5x.train` and load the result with initial_checkpoint_path.')
    os.makedirs(self.model_dir, exist_ok=True)
    self.checkpointer = checkpoints.Checkpointer(self.model_dir, save_config or checkpoints.SaveCheckpointConfig(
        period=None, keep=3), self.trainer.abstract_state)
    self.state, self.run_state, self._saved_position, self.origin = self._restore_or_init(
        initial_checkpoint_path, seed)
    self.trainer.seed = self.run_state.seed
    self.runner = inference.InferenceRunner(model, self.partitioner, decoding_config or decoding.DecodingConfig())
    self._inputs: tuple[str, data.InputIterator] | None = None
    self.history: list[dict[str, float]] = []
    print(f'[flan_t5x] InteractiveModel in {self.model_dir}: {self.origin}', flush=True)

  # ------------------------------------------------------------------ construction
  @classmethod
  def from_gin_files(cls, gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
                     gin_search_paths: Sequence[str] = ('.',), **overrides: Any) -> 'InteractiveModel':
    """Builds from the gin files a training run uses (e.g. gin/demo.gin): the model (MODEL),
    MODEL_DIR, TASK_FEATURE_LENGTHS, BATCH_SIZE, INITIAL_CHECKPOINT_PATH, RANDOM_SEED,
    MIXTURE_OR_TASK_NAME, and the files' configured Trainer (learning-rate schedule, microbatches),
    PjitPartitioner and SaveCheckpointConfig. Keyword `overrides` replace any constructor argument.

    Gin's global configuration is cleared and replaced by these files.
    """
    import gin  # pylint: disable=g-import-not-at-top
    from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
    with gin.unlock_config():  # a second model in the same process (gin locks at finalize)
      gin.clear_config()
      gin_utils.parse_gin(gin_files, gin_bindings, gin_search_paths, finalize=True)
    macros = {name: gin.query_parameter(f'%{name}') for name in _GIN_MACROS}
    macros = {name: (value.scoped_configurable_fn() if hasattr(value, 'scoped_configurable_fn') else value)
              for name, value in macros.items()}
    configured = lambda obj: (gin.get_configurable(obj) if _is_configured(gin, obj) else obj)
    kwargs = dict(
        model=gin.query_parameter('%MODEL').scoped_configurable_fn(), model_dir=macros['MODEL_DIR'],
        task_feature_lengths=macros['TASK_FEATURE_LENGTHS'], batch_size=macros['BATCH_SIZE'],
        initial_checkpoint_path=macros['INITIAL_CHECKPOINT_PATH'], seed=macros['RANDOM_SEED'],
        mixture_or_task_name=macros['MIXTURE_OR_TASK_NAME'],
        trainer_cls=configured(trainer_lib.Trainer), partitioner=configured(partitioning.PjitPartitioner)(),
        save_config=configured(checkpoints.SaveCheckpointConfig)())
    unknown = sorted(set(overrides) - set(kwargs) - {'learning_rate_fn', 'decoding_config'})
    if unknown:
      raise TypeError(f'InteractiveModel.from_gin_files: unknown override(s) {unknown}; expected some of '
                      f'{sorted(set(kwargs) | {"learning_rate_fn", "decoding_config"})}')
    kwargs.update(overrides)
    return cls(**kwargs)

  def _restore_or_init(self, initial_checkpoint_path: str | None, seed: int | None):
    restored = self.checkpointer.restore_latest()
    if restored is not None:
      return (restored.state, restored.run_state, restored.input_state,
              f'resumed from step {int(restored.state.step)}')
    run_state = checkpoints.RunState(seed=seed if seed is not None else random.SystemRandom().randrange(2**31))
    self.trainer.seed = run_state.seed
    if initial_checkpoint_path:
      params, step = checkpoint_import.restore_params(initial_checkpoint_path, self.trainer.abstract_state.params,
                                                      self.model.config)
      return self.trainer.state_from_params(params, step), run_state, None, f'from {initial_checkpoint_path}'
    return self.trainer.init_state(), run_state, None, 'fresh parameters'

  # ------------------------------------------------------------------ training
  @property
  def step(self) -> int:
    return int(jax.device_get(self.state.step))

  def _train_inputs(self, name: str) -> data.InputIterator:
    if self._inputs is not None and self._inputs[0] == name:
      return self._inputs[1]
    task_vocab.check_vocabularies(self.model, name)
    cfg = data.DatasetConfig(name, self.task_feature_lengths, 'train', self.trainer.batch_size, shuffle=True,
                             pack=True)
    inputs = data.InputIterator(data.get_dataset(cfg, self.model.feature_converter(pack=True),
                                                 seed=self.run_state.seed, num_epochs=None))
    if self._saved_position and name == self.mixture_or_task_name:
      inputs.restore(self._saved_position)  # the run this checkpoint came from stopped here
    self._saved_position = None
    self._inputs = (name, inputs)
    return inputs

  def train_loop(self, num_steps: int, mixture_or_task_name: str | None = None, log_period: int = 10,
                 progress: bool = True) -> list[dict[str, float]]:
    """Trains `num_steps` more steps on the mixture (default MIXTURE_OR_TASK_NAME), then saves a
    checkpoint with the input position; returns the logged summaries (loss per token, accuracy ...)."""
    name = mixture_or_task_name or self.mixture_or_task_name
    if not name:
      raise ValueError('train_loop needs a mixture_or_task_name (none was given or configured).')
    if num_steps < 1 or log_period < 1:
      raise ValueError(f'num_steps and log_period must be at least 1, got {num_steps}, {log_period}.')
    inputs = self._train_inputs(name)
    start = self.step
    bar = _progress_bar(num_steps) if progress else None
    logger = actions.LogMetrics(log_period, summaries.SummaryWriter(os.path.join(self.model_dir, 'train')), bar,
                                print_lines=bar is None)
    loop = actions.Loop(step=start, total_steps=start + num_steps, state=self.state, run_state=self.run_state,
                        trainer=self.trainer, checkpointer=self.checkpointer, inputs=inputs,
                        metrics=actions.MetricsAccumulator(), history=collections.deque())
    lock = run_lock.lock_model_dir(self.model_dir)
    try:
      while loop.step < loop.total_steps:
        loop.state, step_metrics = self.trainer.train_step(loop.state, next(inputs))
        self.state = loop.state  # the old state was donated to the step
        loop.metrics.add(step_metrics)
        loop.step += 1
        self.run_state.batches_consumed += 1
        logger.after_dispatch(loop)
        if bar is not None:
          bar.update(1)
        logger.maybe_run(loop)
      actions.SaveCheckpoint(None, logger).run(loop)
      self.checkpointer.wait()
    finally:
      self.state = loop.state
      if bar is not None:
        bar.close()
      logger.close()
      if lock is not None:
        lock.release()
    self.history += list(loop.history)
    return list(loop.history)

  # ------------------------------------------------------------------ inference
  @property
  def params(self):
    return self.trainer.full_params(self.state.params)

  def _encode(self, texts: Sequence[str], vocabulary, length: int) -> np.ndarray:
    if isinstance(texts, str):
      raise TypeError('Pass a list of strings, not one string.')
    rows = [inference.fit_tokens(list(vocabulary.encode(t)) + [decoding.EOS_ID], length)[0] for t in texts]
    return inference.pad_batch(rows, inference.round_up(max(len(r) for r in rows), evaluation.LENGTH_MULTIPLE))

  def predict(self, inputs: Sequence[str], max_decode_length: int | None = None) -> list[str]:
    """Decoded outputs for raw input texts (the DecodingConfig's method; greedy by default)."""
    tokens = self._encode(inputs, self.model.input_vocabulary, self.task_feature_lengths['inputs'])
    length = max_decode_length or self.task_feature_lengths['targets']
    outputs_BxKxT, _ = self.runner.predict(self.params, tokens, length)
    return [self.model.output_vocabulary.decode(decoding.strip_after_eos(row[0])) for row in outputs_BxKxT]

  def score(self, inputs: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """The log-likelihood of each target given its input, shape (len(inputs),)."""
    if len(inputs) != len(targets):
      raise ValueError(f'{len(inputs)} inputs but {len(targets)} targets.')
    encoded = self._encode(inputs, self.model.input_vocabulary, self.task_feature_lengths['inputs'])
    target_tokens = self._encode(targets, self.model.output_vocabulary, self.task_feature_lengths['targets'])
    return self.runner.score(self.params, encoded, target_tokens)

  def evaluate(self, mixture_or_task_name: str, split: str = 'validation', max_examples: int | None = None,
               batch_size: int = 32, task_feature_lengths: Mapping[str, int] | None = None,
               output_dir: str | None = None) -> dict[str, dict]:
    """`flan_t5x.eval`'s metrics (per task and template) of the current parameters; with `output_dir`,
    its files too (tied to the newest checkpoint when the parameters are the saved ones)."""
    task_vocab.check_vocabularies(self.model, mixture_or_task_name)
    cfg = evaluation.InferenceEvalConfig(mixture_or_task_name, split, task_feature_lengths, batch_size, max_examples,
                                         decoding_config=self.runner.decoding_config)
    results, records = evaluation.evaluate_params(self.model, self.partitioner, self.params, cfg, self.runner)
    if output_dir:
      saved = self.checkpointer.latest_step() == self.step
      path = self.checkpointer.step_dir(self.step) if saved else None
      fingerprint = inference.checkpoint_fingerprint(path) if saved else None
      evaluation.write_outputs(output_dir, results, records, self.step, path, fingerprint)
      print(f'[flan_t5x] wrote {os.path.abspath(output_dir)} (results.md: per task and template)', flush=True)
    return results

  def close(self) -> None:
    self.checkpointer.close()

  def __enter__(self) -> 'InteractiveModel':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _is_configured(gin, obj) -> bool:
  try:
    gin.get_configurable(obj)
  except ValueError:
    return False
  return True


def _progress_bar(total: int):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top  (a widget in notebooks)
  return tqdm(total=total, desc='train', unit='step')


def metrics_table(results_by_name: Mapping[str, Mapping[str, dict]]):
  """{run name: evaluate() results} -> a pandas DataFrame, one row per task and metric, one column per run,
  values rounded to 2 decimals as reports show them (metrics are on 0-100 scales)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  rows = collections.defaultdict(dict)
  for run, results in results_by_name.items():
    for task, result in results.items():
      for metric, value in result['metrics'].items():
        rows[(task, metric)][run] = value
      for metric, value in result.get('rank_classification', {}).items():
        rows[(task, f'rank_classification/{metric}')][run] = value
  frame = pd.DataFrame.from_dict(rows, orient='index')
  frame.index = pd.MultiIndex.from_tuples(frame.index, names=['task', 'metric'])
  return frame.sort_index().round(2)

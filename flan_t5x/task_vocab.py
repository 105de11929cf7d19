"""The check T5X makes before training or evaluating: the model's vocabularies are the task's."""

from __future__ import annotations

import importlib

import seqio


def _describe(vocab) -> str:
  return repr(vocab)  # seqio's str() of a SentencePieceVocabulary reads the file (an md5)


def check_vocabularies(model, mixture_or_task_name: str, module: str | None = None,
                       features: tuple[str, ...] = ('inputs', 'targets')) -> None:
  """Raises ValueError when the task's `features` vocabularies differ from the model's.

  `inputs` is compared with model.input_vocabulary, `targets` with model.output_vocabulary, with
  seqio's equality (same SentencePiece file and extra ids; flan_tasks' T5 vocabulary compares as the
  plain seqio vocabulary of the file it resolves to). A model without vocabularies is not checked.
  """
  if module:
    importlib.import_module(module)
  task = seqio.get_mixture_or_task(mixture_or_task_name)
  output_features = task.output_features
  pairs = {'inputs': getattr(model, 'input_vocabulary', None),
           'targets': getattr(model, 'output_vocabulary', None)}
  for feature in features:
    model_vocab = pairs[feature]
    if model_vocab is None or feature not in output_features:
      continue
    task_vocab = output_features[feature].vocabulary
    if task_vocab != model_vocab:
      side = 'input_vocabulary' if feature == 'inputs' else 'output_vocabulary'
      raise ValueError(
          f'Model and Task vocabularies do not match (as T5X checks): task {mixture_or_task_name!r} '
          f'feature {feature!r} has {_describe(task_vocab)}, model.{side} is '
          f'{_describe(model_vocab)}. Use one vocabulary setting: with flan-t5x model gin files set '
          "VOCAB_PATH (and VOCAB_EXTRA_IDS), which sets both the model's and flan_tasks' vocabulary; "
          'or bind VOCABULARY to the vocabulary the task uses (flan_tasks reads $FLAN_VOCAB_PATH / '
          'flan_tasks.configure(vocab_path=...), default T5X\'s Flan-T5 vocabulary; demo tasks use '
          'seqio.ByteVocabulary()).')

"""The check T5X makes before training or evaluating: the model's vocabularies are the task's."""

from __future__ import annotations

import importlib

import seqio


def _describe(vocab) -> str:
  return repr(vocab)  # seqio's str() of a SentencePieceVocabulary reads the file (an md5)


def check_readable(vocab, where: str) -> None:
  """Loads a SentencePiece vocabulary now, so that a missing file stops the job before any work
  (the input pipeline would otherwise find it deep inside a TF traceback)."""
  if not isinstance(vocab, seqio.SentencePieceVocabulary):
    return
  try:
    vocab.vocab_size  # pylint: disable=pointless-statement  (reads the model file)
  except FileNotFoundError as e:  # flan_tasks' VocabularyNotFoundError says where the path was set
    raise FileNotFoundError(f'{where}: {e}') from None
  except Exception as e:  # pylint: disable=broad-except  (tf.io.gfile: NotFound, PermissionDenied, ...)
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise FileNotFoundError(
        f'{where}: cannot read the SentencePiece vocabulary {_describe(vocab)} ({type(e).__name__}: '
        f"{first_line}). With flan-t5x model gin files set VOCAB_PATH = '/path/to/spiece.model' (or "
        '$FLAN_VOCAB_PATH).') from None


def check_vocabularies(model, mixture_or_task_name: str, module: str | None = None,
                       features: tuple[str, ...] = ('inputs', 'targets')) -> None:
  """Raises ValueError when the task's `features` vocabularies differ from the model's.

  `inputs` is compared with model.input_vocabulary, `targets` with model.output_vocabulary, with
  seqio's equality (same SentencePiece file and extra ids; flan_tasks' T5 vocabulary compares as the
  plain seqio vocabulary of the file it resolves to). A model without vocabularies is not checked.
  The task's SentencePiece files are read here: a missing one raises FileNotFoundError (check_readable).
  """
  if module:
    importlib.import_module(module)
  task = seqio.get_mixture_or_task(mixture_or_task_name)
  output_features = task.output_features
  pairs = {'inputs': getattr(model, 'input_vocabulary', None),
           'targets': getattr(model, 'output_vocabulary', None)}
  for feature in features:
    model_vocab = pairs[feature]
    if feature not in output_features:
      continue
    task_vocab = output_features[feature].vocabulary
    check_readable(task_vocab, f'task {mixture_or_task_name!r} feature {feature!r}')
    if model_vocab is None:
      continue
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

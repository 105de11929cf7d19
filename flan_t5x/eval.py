r"""Decode a mixture's tasks and compute their metrics (ROUGE, accuracy, ...), as T5X's eval.py.

  python -m flan_t5x.eval --gin_file=gin/eval_heldout.gin --gin.CHECKPOINT_PATH="'runs/x'"
  python -m flan_t5x.eval --gin_file=gin/eval_demo.gin      # after `make demo` trained runs/demo

For each task: unpacked inputs at the task's full lengths (or TASK_FEATURE_LENGTHS,
counting truncated examples), decoding, detokenization, the task's
postprocess_fn on predictions and targets, its metric_fns; per task and per
`_template_idx`. Tasks with answer options (e.g. 1-5 stars) also get rank
classification: the option with the highest log-likelihood is the prediction.

Outputs under EVAL_OUTPUT_DIR (all written atomically, by process 0):
  <task>.json                metrics, per-template metrics, counts (asked and evaluated), lengths,
                             decoding settings, step and checkpoint fingerprint (path, format, step,
                             metadata sha256); 95% bootstrap intervals of every metric per task and
                             template (1,000 resamples, seed 0: flan_t5x.intervals) and sanity flags
                             (input-independent predictions, fewer examples than asked)
  <task>-predictions.jsonl   {"input", "target", "prediction", "template_idx"} per example, and the
                             postprocessed target and prediction the metrics scored
  results.json, results.md   all tasks, values with intervals, flags; the markdown is also printed
  inference_eval/            TensorBoard scalars `<task>/<metric>` at the checkpoint step
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

from flan_t5x import decoding
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import task_vocab


def evaluate(*, model: models.EncoderDecoderModel, checkpoint_path: str, output_dir: str,
             mixture_or_task_name: str = 'flan_heldout', split: str = 'validation',
             task_feature_lengths: Mapping[str, int] | None = None, batch_size: int = 32,
             max_examples: int | None = None, rank_classification: bool = True,
             decoding_config: decoding.DecodingConfig | None = None,
             partitioner: partitioning.PjitPartitioner | None = None,
             module: str | None = None, json_write_n_results: int | None = None) -> dict[str, dict]:
  """Loads CHECKPOINT_PATH, evaluates the mixture, writes outputs; returns {task: result}.

  `decoding_config` None: the model's decode_fn (T5X's default: beam search, one beam).
  `json_write_n_results`: examples per task in T5X's inference_eval/<task>-<step>.jsonl (None: all).
  """
  partitioner = partitioner or partitioning.PjitPartitioner()
  cfg = evaluation.InferenceEvalConfig(mixture_or_task_name, split, task_feature_lengths, batch_size, max_examples,
                            rank_classification, decoding_config or model.decoding_config(), module)
  task_vocab.check_vocabularies(model, mixture_or_task_name, module)
  # Fingerprint first and load what was fingerprinted, even if a MODEL_DIR gets a newer step meanwhile.
  fingerprint = inference.checkpoint_fingerprint(checkpoint_path)
  model = inference.model_for_checkpoint(model, fingerprint['resolved'])  # base + adapter: the adapted model
  params, step = inference.load_params(model, partitioner, fingerprint['resolved'])
  print(f'[flan_t5x] evaluating {checkpoint_path} (step {step}) on {mixture_or_task_name}/{split}', flush=True)
  results, records = evaluation.evaluate_params(model, partitioner, params, cfg)
  report = evaluation.write_outputs(output_dir, results, records, step, checkpoint_path, fingerprint,
                                    json_write_n_results)
  if jax.process_index() == 0:
    print(report, flush=True)
    print(f'[flan_t5x] wrote {os.path.abspath(output_dir)}', flush=True)
  return results


def main(argv: list[str]) -> None:
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.start_run('%EVAL_OUTPUT_DIR', job='eval')
  # The gin files bind T5X's entry point (`import __main__ as eval_script`): flan_t5x/t5x_names.
  from flan_t5x.t5x_names import eval_script  # pylint: disable=g-import-not-at-top
  gin.get_configurable(eval_script.evaluate)()


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

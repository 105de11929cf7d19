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
  inference_eval/            TensorBoard scalars `<task>/<metric>` at the checkpoint step, and T5X's
                             files: <task>-metrics.jsonl (a line per evaluation) and
                             <task>-<step>.jsonl (input, target, output, prediction per example)

The work is flan_t5x.evaluation.evaluate_checkpoint; gin binds it through T5X's `evaluate`
(flan_t5x/t5x_names/eval_script.py).
"""

from __future__ import annotations

from flan_t5x import evaluation

evaluate = evaluation.evaluate_checkpoint  # the library function this job runs


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

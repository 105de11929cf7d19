r"""Batch inference's command-line entry point; the work is flan_t5x/batch_inference.py.

  python -m flan_t5x.infer --gin_file=gin/infer.gin --gin.CHECKPOINT_PATH="'runs/x'" \
      --gin.INFER_INPUT_PATH="'inputs.jsonl'" --gin.INFER_OUTPUT_DIR="'runs/infer'"

JSONL of raw inputs (or a SeqIO task split) -> JSONL predictions, resumable after a kill; the
output layout and the resume rules are batch_inference's.
"""

from __future__ import annotations

from flan_t5x import batch_inference

infer = batch_inference.infer  # the library functions this job runs
read_jsonl_inputs = batch_inference.read_jsonl_inputs


def main(argv: list[str]) -> None:
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  # The config is written by infer() into the directory it chooses, never over a finished job's.
  gin_utils.start_run('%INFER_OUTPUT_DIR', every_host=True, write_config=False, job='infer')
  # The gin files bind T5X's entry point (`import __main__ as infer_script`): flan_t5x/t5x_names.
  from flan_t5x.t5x_names import infer_script  # pylint: disable=g-import-not-at-top
  gin.get_configurable(infer_script.infer)(run_config=gin.config_str())


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

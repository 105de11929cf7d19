"""Progress: a bar only on a terminal, plain lines in logs; eval shows what it decodes."""
import jax
import numpy as np
import pytest
import seqio

from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import partitioning
from flan_t5x import progress

import helpers


@pytest.mark.slow
def test_training_off_a_terminal_prints_plain_lines_and_no_bar(tmp_path, capsys):
  helpers.run_training(tmp_path, 2, eval_period=2, use_progress_bar=True)
  captured = capsys.readouterr()
  assert '\r' not in captured.out + captured.err  # no tqdm redraws in a log file
  lines = captured.out.splitlines()
  assert any(line.startswith('[flan_t5x] step 2 loss/token') for line in lines)
  assert any(line.startswith('[flan_t5x] step 2 validation loss/token') for line in lines)


def test_plain_lines_say_how_far_and_a_bar_on_a_terminal(capsys):
  plain = progress.Progress(4, 'decode t', 'batch', line_seconds=0)
  for _ in range(4):
    plain.update()
  plain.close()
  lines = capsys.readouterr().out.splitlines()
  # Every update here (line_seconds=0) but the first (it carries the compilation, so the estimate
  # starts after it) and the last (the caller reports the end itself).
  assert [line.split(',')[0] for line in lines] == [f'[flan_t5x] decode t: batch {i}/4' for i in (2, 3)]
  assert all(line.endswith(' s left') for line in lines)
  bar = progress.Progress(4, 'train', 'step', terminal=True)
  bar.update(2)
  progress.say('[flan_t5x] a line')  # printed above the bar, not glued onto it
  bar.close()
  captured = capsys.readouterr()
  assert captured.out == '[flan_t5x] a line\n' and '2/4' in captured.err


def test_eval_says_what_it_decodes(capsys):
  model = helpers.tiny_model()
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  params = inference.random_params(model, partitioner)
  task = seqio.get_mixture_or_task(helpers.dataset_cfg().mixture_or_task_name)
  cfg = evaluation.InferenceEvalConfig(task.name, 'validation', helpers.FEATURE_LENGTHS, batch_size=2,
                                       max_examples=3, rank_classification=False)
  result, _ = evaluation.evaluate_task(inference.InferenceRunner(model, partitioner), params, task, cfg)
  assert result['num_examples'] == 3
  out = capsys.readouterr().out
  assert f'[flan_t5x] {task.name}: decoding 3 examples in 2 batches (inputs 32, up to 16 target tokens)' in out
  assert np.isfinite(result['decode_seconds'])


def test_the_time_left_leaves_out_the_first_units_compilation(capsys):
  import time  # pylint: disable=g-import-not-at-top
  plain = progress.Progress(20, 'decode t', 'batch', line_seconds=0)
  time.sleep(1.0)  # the first batch compiles
  plain.update()
  for _ in range(5):  # then each batch is quick
    plain.update()
  lines = capsys.readouterr().out.splitlines()
  # 14 batches left at the rate after the first: well under a second, not 14 x 1 s / 6.
  assert lines[-1].startswith('[flan_t5x] decode t: batch 6/20, about 0 s left'), lines

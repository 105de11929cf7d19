"""Outputs are readable by teammates: under umask 022 every file is 0644 and every directory 0755,
atomic writes included (tempfile makes 0600 / 0700)."""
import contextlib
import os
import stat

import jax
import numpy as np
import pytest

from flan_t5x import adapters
from flan_t5x import checkpoints
from flan_t5x import evaluation
from flan_t5x import file_modes
from flan_t5x import hf_format
from flan_t5x import lora
from flan_t5x import peft_format

import helpers


@contextlib.contextmanager
def _umask(mask):
  old = os.umask(mask)
  try:
    yield
  finally:
    os.umask(old)


def _modes(root):
  """{relative path: permission bits} of everything under root."""
  out = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      out[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
  return out


def _result(task):
  metrics = {'rouge1': 12.5}
  return {'task': task, 'split': 'validation', 'num_examples': 2, 'input_length': 32, 'max_decode_length': 16,
          'truncated_inputs': 0, 'truncated_targets': 0, 'metrics': metrics,
          'by_template': {'0': {'num_examples': 2, 'metrics': metrics}}}


@pytest.mark.slow
def test_every_output_is_0644_and_every_directory_0755_under_umask_022(tmp_path):
  with _umask(0o022):
    assert file_modes.umask() == 0o022 and file_modes.file_mode() == 0o644
    helpers.run_training(tmp_path / 'run', 2, eval_period=2, period=2)
    checkpoints.write_text_atomically(str(tmp_path / 'run' / 'config.gin'), 'TRAIN_STEPS = 2\n')
    evaluation.write_outputs(str(tmp_path / 'eval'), {'t': _result('t')},
                             {'t': [{'input': 'a', 'target': 'b', 'prediction': 'c', 'template_idx': 0}]},
                             2, str(tmp_path / 'run'))
    config = helpers.tiny_config()
    params, _ = checkpoints.read_params(str(tmp_path / 'run'))
    hf_format.save(params, config, str(tmp_path / 'hf'))
    lora_cfg = lora.LoraConfig(rank=2)
    trainer = helpers.make_trainer(helpers.tiny_model(lora=lora_cfg))
    adapter_params = jax.tree.map(np.asarray, trainer.init_state().params)
    assert adapters.count(adapter_params) > 0
    peft_format.export(adapter_params, lora_cfg, config, str(tmp_path / 'peft'), 'base')
  modes = _modes(tmp_path)
  for must in ('run/config.gin', 'run/checkpoint_2', 'run/train', 'run/validation', 'eval/results.md',
               'eval/t-predictions.jsonl', 'eval/inference_eval', 'hf/config.json', 'hf', 'peft',
               'peft/adapter_config.json'):
    assert must in modes, sorted(modes)
  wrong = {path: oct(mode) for path, mode in modes.items()
           if mode != (0o755 if os.path.isdir(tmp_path / path) else 0o644)}
  assert not wrong, wrong


def test_atomic_writes_follow_a_stricter_umask(tmp_path):
  with _umask(0o027):
    checkpoints.write_text_atomically(str(tmp_path / 'a' / 'results.md'), 'x\n')
    with hf_format.new_directory_atomically(str(tmp_path / 'b')) as tmp:
      with open(os.path.join(tmp, 'f'), 'w') as f:
        f.write('x')
  assert _modes(tmp_path) == {'a': 0o750, 'a/results.md': 0o640, 'b': 0o750, 'b/f': 0o640}

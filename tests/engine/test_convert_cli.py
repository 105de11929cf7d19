"""convert: per-direction help, the run's recorded config.gin instead of --gin_file, a hint naming the
model gin file that fits, a warning when adapter_config.json names a base transformers cannot load."""
import json
import os

import gin
import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import convert
from flan_t5x import gin_utils
from flan_t5x import hf_format
from flan_t5x import lora

import helpers


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_each_direction_prints_its_own_help(capsys):
  with pytest.raises(SystemExit) as done:
    convert.main(['merge-lora', '--help'])
  assert done.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith('usage: python -m flan_t5x.convert merge-lora') and '--hf' in out
  assert '--base_model_name_or_path' not in out and 'hf-to-t5x' not in out


def _tiny_file_checkpoint(model_dir):
  """A checkpoint shaped as gin/models/t5_1_1_tiny.gin, with the config.gin its run would record."""
  gin_utils.parse_gin(['gin/models/t5_1_1_tiny.gin'], ['DROPOUT_RATE = 0.0'], finalize=False)
  record = gin.config_str()
  from flan_t5x import network  # pylint: disable=g-import-not-at-top
  config = gin.get_configurable(network.T5Config)()  # by object: the files name it t5x...network.T5Config
  gin.clear_config()
  rng = np.random.default_rng(0)
  params = {}
  for _, path, _ in hf_format.name_map(config):
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = rng.normal(size=hf_format.expected_shape(path, config)).astype(np.float32)
  checkpoint_import.save_params_checkpoint(params, str(model_dir), step=5)
  (model_dir / 'config.gin').write_text(record)
  return config


def test_t5x_to_hf_reads_the_run_config_and_names_the_model_file_that_fits(tmp_path, capsys):
  config = _tiny_file_checkpoint(tmp_path / 'run')
  assert convert.main(['t5x-to-hf', str(tmp_path / 'run' / 'checkpoint_5'), str(tmp_path / 'hf')]) == 0
  assert f"model configuration from {tmp_path / 'run' / 'config.gin'}" in capsys.readouterr().err
  assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['d_model'] == config.emb_dim == 8
  assert convert.main(['t5x-to-hf', str(tmp_path / 'run'), str(tmp_path / 'hf2'),
                       '--gin_file=gin/models/t5_1_1_small.gin']) == 2
  err = capsys.readouterr().err
  assert ('error: --gin_file=gin/models/t5_1_1_small.gin does not describe ' in err and
          'its shapes fit gin/models/t5_1_1_tiny.gin: pass --gin_file=gin/models/t5_1_1_tiny.gin' in err), err
  assert not (tmp_path / 'hf2').exists()


def test_lora_exports_without_gin_file_and_warn_about_a_base_transformers_cannot_load(tmp_path, capsys):
  params = jax.tree.map(np.asarray, helpers.make_trainer().init_state().params)
  base = checkpoint_import.save_params_checkpoint(params, str(tmp_path / 'base'))
  run = tmp_path / 'lora'
  helpers.run_training(run, 1, model=helpers.tiny_model(lora=lora.LoraConfig(rank=2)), initial_checkpoint=base)
  (run / 'config.gin').write_text(helpers.TINY_MODEL_GIN + 'from flan_t5x import lora\n'
                                  'network.T5Config.lora = @lora.LoraConfig()\nlora.LoraConfig.rank = 2\n')
  capsys.readouterr()
  assert convert.main(['export-peft', str(run), str(tmp_path / 'peft')]) == 0
  err = capsys.readouterr().err
  assert f"warning: adapter_config.json records base_model_name_or_path='{base}'" in err
  assert 'flan_t5x checkpoint that transformers cannot load' in err and 't5x-to-hf' in err
  assert json.loads((tmp_path / 'peft' / 'adapter_config.json').read_text())['r'] == 2
  assert convert.main(['export-peft', str(run), str(tmp_path / 'peft2'), '--base_model_name_or_path', 'x']) == 0
  assert 'warning' not in capsys.readouterr().err
  assert convert.main(['merge-lora', str(run / 'checkpoint_1'), str(tmp_path / 'merged')]) == 0
  assert os.path.isdir(tmp_path / 'merged' / 'checkpoint_1')

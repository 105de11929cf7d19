"""A training process killed with SIGKILL and restarted continues with the losses of an uninterrupted run."""
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import gin_utils
from flan_t5x import models
from flan_t5x import network

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = gin_utils.REPO_ROOT
TRAIN_STEPS = 12


def _command(model_dir, extra=()):
  bindings = {
      'MODEL_DIR': f"'{model_dir}'", 'MIXTURE_OR_TASK_NAME': "'engine_test_copy'",
      'MIXTURE_OR_TASK_MODULE': "'tiny_task'", 'TASK_FEATURE_LENGTHS': "{'inputs': 32, 'targets': 16}",
      'TRAIN_STEPS': str(TRAIN_STEPS), 'BATCH_SIZE': '4', 'USE_CACHED_TASKS': 'False',
      'INITIAL_CHECKPOINT_PATH': 'None', 'EVAL_PERIOD': 'None', 'RANDOM_SEED': '0', 'DROPOUT_RATE': '0.1',
      'network.T5Config.vocab_size': '384', 'network.T5Config.dtype': "'float32'",
      'utils.SaveCheckpointConfig.period': '1', 'train_script.train.log_period': '1',
      'train_script.train.use_progress_bar': 'False'}
  return [sys.executable, '-m', 'flan_t5x.train', '--gin_file=gin/models/t5_1_1_tiny.gin',
          '--gin_file=gin/runs/finetune.gin'] + [f'--gin.{k}={v}' for k, v in bindings.items()] + [
              # tiny_task's vocabulary (train checks that the model's matches the task's)
              '--gin_bindings=from __gin__ import dynamic_registration', '--gin_bindings=import seqio',
              '--gin_bindings=VOCABULARY = @seqio.ByteVocabulary()'] + list(extra)


def _env():
  return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE, os.environ.get('PYTHONPATH', '')]),
              XLA_FLAGS='--xla_backend_optimization_level=0')


def _lora_base(tmp_path):
  """A random base of t5_1_1_tiny.gin's shape (vocab 384, fp32) and the flags of a LoRA run on it."""
  config = network.T5Config(vocab_size=384, emb_dim=8, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                            head_dim=3, mlp_dim=16, dropout_rate=0.0, dtype='float32')
  params = models.unbox(models.EncoderDecoderModel(network.Transformer(config)).init_params(
      jax.random.PRNGKey(1), 1, 8, 8))
  base = checkpoint_import.save_params_checkpoint(jax.tree.map(np.asarray, params), str(tmp_path / 'base'))
  # LoRA dropout 0.1: the resumed run must draw the same adapter dropout masks.
  return ['--gin_file=gin/runs/lora.gin', f"--gin.INITIAL_CHECKPOINT_PATH='{base}'", '--gin.LORA_RANK=4',
          '--gin.LORA_DROPOUT=0.1', "--gin.LORA_TARGETS='all'"]


@pytest.mark.slow
@pytest.mark.parametrize('arm', ['full', 'lora'])
def test_sigkill_then_restart_matches_uninterrupted_run(tmp_path, arm):
  reference_dir, killed_dir = tmp_path / 'reference', tmp_path / 'killed'
  extra = _lora_base(tmp_path) if arm == 'lora' else []
  command = lambda model_dir: _command(model_dir, extra)
  done = subprocess.run(command(reference_dir), cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]

  proc = subprocess.Popen(command(killed_dir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not os.path.isdir(killed_dir / 'checkpoint_4') and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.rsplit('_', 1)[1]) for p in glob.glob(str(killed_dir / 'checkpoint_*'))
                  if p.rsplit('_', 1)[1].isdigit())
  assert killed_at < TRAIN_STEPS, 'the run finished before it could be killed'

  resumed = subprocess.run(command(killed_dir), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from' in resumed.stdout
  reference, after_kill = helpers.event_losses(reference_dir), helpers.event_losses(killed_dir)
  assert sorted(reference) == sorted(after_kill) == list(range(1, TRAIN_STEPS + 1))
  np.testing.assert_allclose([after_kill[s] for s in reference], [reference[s] for s in reference],
                             rtol=0, atol=1e-6)
  if arm == 'lora':  # the checkpoints hold the adapters only; the run names its base
    assert 'trainable parameters of' in done.stdout
    adapter_params, _ = checkpoints.read_params(str(killed_dir))
    leaves = jax.tree_util.tree_flatten_with_path(adapter_params)[0]
    assert leaves and all(path[-1].key in ('lora_a', 'lora_b') for path, _ in leaves)

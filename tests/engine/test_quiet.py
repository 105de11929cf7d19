"""A job's console carries what it does, not library noise (cuInit without a GPU, orbax's read-only
notes, seqio's packing note on *_pretokenized copies, TF's partial-cache warning, TF INFO lines)."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import quiet

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
NOISE = ('failed call to cuInit', 'Given directory is read only', 'read_only=True, setting save_interval_steps',
         'Features not in `features_length`', 'did not fully read the dataset being cached', 'oneDNN',
         'cpu_feature_guard')


def test_only_known_noise_is_dropped():
  assert quiet.is_noise('Given directory is read only=/ckpt/run')
  assert quiet.is_noise("Features not in `features_length` will be removed during packing: "
                        "{'targets_pretokenized', 'inputs_pretokenized'}")
  assert not quiet.is_noise("Features not in `features_length` will be removed during packing: "
                            "{'inputs_pretokenized', 'answer'}")  # a real feature dropped is still said
  assert not quiet.is_noise('Saving checkpoint failed')


@pytest.mark.slow
def test_eval_job_prints_no_library_noise(tmp_path):
  params = jax.tree.map(np.asarray, helpers.make_trainer().init_state().params)
  checkpoint = checkpoint_import.save_params_checkpoint(params, str(tmp_path / 'ckpt'), step=1)
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  bindings = {'CHECKPOINT_PATH': f"'{checkpoint}'", 'EVAL_OUTPUT_DIR': f"'{tmp_path / 'eval'}'",
              'MIXTURE_OR_TASK_NAME': "'demo_heldout'", 'MAX_EXAMPLES': '2', 'BATCH_SIZE': '2',
              'TASK_FEATURE_LENGTHS': "{'inputs': 64, 'targets': 8}"}
  args = [sys.executable, '-m', 'flan_t5x.eval', f'--gin_file={model_gin}', '--gin_file=gin/runs/eval.gin']
  args += [f'--gin.{k}={v}' for k, v in bindings.items()] + ['--gin.MIXTURE_OR_TASK_MODULE="flan_tasks"']
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(PYTHONPATH=os.pathsep.join([helpers.REPO_ROOT, HERE, os.environ.get('PYTHONPATH', '')]),
             XLA_FLAGS='--xla_backend_optimization_level=0')
  done = subprocess.run(args, cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-4000:]
  assert '[flan_t5x] demo_support_zs: decoding 2 examples in 1 batches' in done.stdout
  heard = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in NOISE)]
  assert not heard, heard


@pytest.mark.slow
@pytest.mark.parametrize('code', [
    'import flan_tasks', 'import flan_t5x, tensorflow as tf; tf.constant(1).numpy()',
    # the README's flan_tasks snippet, read partly (TF's "did not fully read the dataset" case)
    "import flan_tasks, seqio; ds = seqio.get_mixture_or_task('demo_support_zs').get_dataset("
    "{'inputs': 256, 'targets': 64}, split='validation', shuffle=False); next(iter(ds))"])
def test_the_first_tensorflow_import_prints_nothing(code):
  """TensorFlow's C++ start-up lines (absl's InitializeLog note, cudart_stub, cuInit on a CPU machine)
  reach neither a notebook nor a terminal; FLAN_SHOW_STARTUP_LOGS=1 keeps them."""
  env = {k: v for k, v in os.environ.items() if k not in ('TF_CPP_MIN_LOG_LEVEL', 'FLAN_SHOW_STARTUP_LOGS')}
  env['PYTHONPATH'] = helpers.REPO_ROOT
  done = subprocess.run([sys.executable, '-c', code + "; print('imported')"], env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0 and done.stdout.strip() == 'imported' and done.stderr == '', done.stderr[-2000:]
  shown = subprocess.run([sys.executable, '-c', code], env=dict(env, FLAN_SHOW_STARTUP_LOGS='1'),
                         capture_output=True, text=True, timeout=300)
  assert shown.returncode == 0
  if os.path.exists('/dev/nvidia0'):
    return  # with a GPU driver TensorFlow has nothing to say about CUDA
  assert 'cudart_stub' in shown.stderr or 'absl::InitializeLog' in shown.stderr, shown.stderr[-2000:]

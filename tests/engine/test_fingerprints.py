"""Outputs tied to what made them: infer resumes only the same job, eval records its checkpoint, compare checks.

Two tiny checkpoints (steps 20 and 40 of one MODEL_DIR, different parameters). Infer is re-run into
a finished directory with the other checkpoint, an edited input line or another decoding setting:
each is refused with the reason and nothing there changes (bytes and mtimes); the same job resumes
and skips its chunks; INFER_ON_MISMATCH='new_dir' writes next to it.
"""
import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import compare
from flan_t5x import decoding
from flan_t5x import eval as eval_lib
from flan_t5x import gin_utils
from flan_t5x import hf_format
from flan_t5x import infer as infer_lib
from flan_t5x import partitioning

import flan_tasks  # noqa: F401  registers the demo tasks

import helpers

REPO = gin_utils.REPO_ROOT
HERE = os.path.dirname(os.path.abspath(__file__))



@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """A MODEL_DIR with checkpoint_20 and checkpoint_40 (different random parameters)."""
  model = helpers.tiny_model()
  directory = str(tmp_path_factory.mktemp('model'))
  for step, seed in ((20, 1), (40, 2)):
    params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(seed), 1, 8, 8))
    checkpoint_import.save_params_checkpoint(jax.tree.map(np.asarray, params), directory, step=step)
  return model, directory


def _partitioner():
  return partitioning.PjitPartitioner(devices=jax.devices()[:1])


def _write_inputs(path, n, edit=None):
  with open(path, 'w') as f:
    for i in range(n):
      f.write(json.dumps({'text': f'copy: alpha beta {i}' + (' edited' if i == edit else '')}) + '\n')


def _infer(model, checkpoint_path, inputs, out, **kwargs):
  settings = dict(input_field='text', chunk_size=2, batch_size=2, input_length=32, max_decode_length=6)
  settings.update(kwargs)
  return infer_lib.infer(model=model, checkpoint_path=checkpoint_path, output_dir=str(out), input_path=str(inputs),
                         partitioner=_partitioner(), **settings)


def _snapshot(directory) -> dict:
  """{relative path: (bytes, mtime_ns)} of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
  return files


# ------------------------------------------------------------------------------ fingerprints

def test_checkpoint_fingerprint_names_the_checkpoint(model_dir, tmp_path):
  model, directory = model_dir
  step_20, step_40 = (os.path.join(directory, f'checkpoint_{s}') for s in (20, 40))
  latest = checkpoint_import.checkpoint_fingerprint(directory)
  assert latest['resolved'] == step_40 and latest['step'] == 40 and latest['format'] == 'flan_t5x'
  assert latest == {**checkpoint_import.checkpoint_fingerprint(step_40), 'path': directory}  # stable
  assert checkpoint_import.same_checkpoint(latest, checkpoint_import.checkpoint_fingerprint(step_40))
  assert not checkpoint_import.same_checkpoint(latest, checkpoint_import.checkpoint_fingerprint(step_20))

  # Hugging Face: the same config and tensor names, other values -> another fingerprint.
  params_20 = checkpoint_import.load_params(step_20)
  params_40 = checkpoint_import.load_params(step_40)
  hf_20, hf_40 = str(tmp_path / 'hf_20'), str(tmp_path / 'hf_40')
  hf_format.save(params_20, model.config, hf_20)
  hf_format.save(params_40, model.config, hf_40)
  fp_20, fp_40 = (checkpoint_import.checkpoint_fingerprint(p) for p in (hf_20, hf_40))
  assert fp_20['format'] == 'huggingface' and fp_20['step'] is None
  with open(os.path.join(hf_20, 'config.json'), 'rb') as a, open(os.path.join(hf_40, 'config.json'), 'rb') as b:
    assert a.read() == b.read()
  assert not checkpoint_import.same_checkpoint(fp_20, fp_40)
  shutil.copytree(hf_20, tmp_path / 'hf_copy')
  assert checkpoint_import.same_checkpoint(fp_20, checkpoint_import.checkpoint_fingerprint(str(tmp_path / 'hf_copy')))


# ------------------------------------------------------------------------------ infer

def _run_infer_cli(tmp_path, checkpoint_path, inputs, out, **bindings):
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  bindings = {'CHECKPOINT_PATH': f"'{checkpoint_path}'", 'INFER_OUTPUT_DIR': f"'{out}'",
              'INFER_INPUT_PATH': f"'{inputs}'", 'INFER_INPUT_FIELD': "'text'", 'CHUNK_SIZE': '2',
              'BATCH_SIZE': '2', 'MAX_DECODE_LENGTH': '6',
              **bindings}
  args = [sys.executable, '-m', 'flan_t5x.infer', f'--gin_file={model_gin}', '--gin_file=gin/runs/infer.gin']
  args += [f'--gin.{k}={v}' for k, v in bindings.items()]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE, os.environ.get('PYTHONPATH', '')]),
             XLA_FLAGS='--xla_backend_optimization_level=0')
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_infer_cli_refuses_another_checkpoint_and_new_dir_starts_fresh(model_dir, tmp_path):
  _, directory = model_dir
  inputs, out = tmp_path / 'in.jsonl', tmp_path / 'out'
  _write_inputs(inputs, 5)
  first = _run_infer_cli(tmp_path, os.path.join(directory, 'checkpoint_40'), inputs, out)
  assert first.returncode == 0, first.stderr[-4000:]
  assert (out / 'config-00000.gin').exists() and (out / 'predictions-00000-of-00001.jsonl').exists()
  before = _snapshot(out)

  refused = _run_infer_cli(tmp_path, os.path.join(directory, 'checkpoint_20'), inputs, out)
  assert refused.returncode != 0
  assert 'holds a different job' in refused.stderr
  assert 'checkpoint: ' in refused.stderr and 'step 40' in refused.stderr and 'step 20' in refused.stderr
  assert _snapshot(out) == before  # not even config-00000.gin was rewritten

  fresh = _run_infer_cli(tmp_path, os.path.join(directory, 'checkpoint_20'), inputs, out,
                         INFER_ON_MISMATCH="'new_dir'")
  assert fresh.returncode == 0, fresh.stderr[-4000:]
  sibling = tmp_path / 'out-2'
  assert f'writing to {sibling}' in fresh.stdout
  assert _snapshot(out) == before
  manifest = json.loads((sibling / 'host-00000-of-00001' / 'manifest.json').read_text())
  assert manifest['checkpoint']['step'] == 20
  old = [json.loads(l) for l in (out / 'predictions-00000-of-00001.jsonl').read_text().splitlines()]
  new = [json.loads(l) for l in (sibling / 'predictions-00000-of-00001.jsonl').read_text().splitlines()]
  assert [r['index'] for r in new] == [r['index'] for r in old] == list(range(5))
  assert [r['score'] for r in new] != [r['score'] for r in old]  # the other checkpoint's predictions


def test_infer_refuses_an_edited_input_line_or_other_decoding(model_dir, tmp_path):
  model, directory = model_dir
  inputs, out = tmp_path / 'in.jsonl', tmp_path / 'out'
  _write_inputs(inputs, 7)
  _infer(model, directory, inputs, out)
  before = _snapshot(out)

  _write_inputs(inputs, 7, edit=3)  # the same number of lines, one of them edited
  with pytest.raises(ValueError, match=r'input lines: sha256 .*chunk 1 \(lines 3, 4\)'):
    _infer(model, directory, inputs, out)
  assert _snapshot(out) == before
  _write_inputs(inputs, 7)

  with pytest.raises(ValueError, match=r'settings\.max_decode_length: 6 -> 8'):
    _infer(model, directory, inputs, out, max_decode_length=8)
  sample = decoding.DecodingConfig(method='sample', temperature=0.5)
  with pytest.raises(ValueError, match=r"settings\.decoding\.method: 'beam' -> 'sample'"):  # T5X's default: beam
    _infer(model, directory, inputs, out, decoding_config=sample)
  assert _snapshot(out) == before

  # new_dir: a fresh sibling; run again, it resumes there instead of making another one.
  assert _infer(model, directory, inputs, out, max_decode_length=8, on_mismatch='new_dir') == str(
      tmp_path / 'out-2' / 'predictions-00000-of-00001.jsonl')
  sibling = _snapshot(tmp_path / 'out-2')
  _infer(model, directory, inputs, out, max_decode_length=8, on_mismatch='new_dir')
  assert _snapshot(tmp_path / 'out-2') == sibling and not (tmp_path / 'out-3').exists()
  assert _snapshot(out) == before


def test_same_job_resumes_and_skips_finished_chunks(model_dir, tmp_path, capsys):
  model, directory = model_dir
  inputs, out = tmp_path / 'in.jsonl', tmp_path / 'out'
  _write_inputs(inputs, 7)
  # The MODEL_DIR and its checkpoint_40 are the same checkpoint: both resume the job.
  predictions = _infer(model, directory, inputs, out)
  before = _snapshot(out)
  capsys.readouterr()
  assert _infer(model, os.path.join(directory, 'checkpoint_40'), inputs, out) == predictions
  assert '4 chunks, 4 already done' in capsys.readouterr().out
  assert _snapshot(out) == before  # nothing decoded or rewritten


@pytest.mark.slow
def test_stopped_job_resumes_without_duplicates_and_never_mixes_chunks(model_dir, tmp_path):
  model, directory = model_dir
  step_20 = os.path.join(directory, 'checkpoint_20')
  inputs = tmp_path / 'in.jsonl'
  _write_inputs(inputs, 7)
  full = open(_infer(model, directory, inputs, tmp_path / 'full')).read()
  _infer(model, step_20, inputs, tmp_path / 'other')

  out = tmp_path / 'out'
  assert _infer(model, directory, inputs, out, max_chunks=2) is None  # "killed" after 2 of 4 chunks
  partial = _snapshot(out)
  with pytest.raises(ValueError, match='step 40.* -> .*step 20'):  # a half-done job is not resumed either
    _infer(model, step_20, inputs, out)
  assert _snapshot(out) == partial
  # A finished chunk of another job copied in (e.g. a mistaken rsync) is found, not mixed in.
  host_dir, other_host_dir = out / 'host-00000-of-00001', tmp_path / 'other' / 'host-00000-of-00001'
  for suffix in ('.jsonl', '.done'):
    shutil.copy(other_host_dir / ('chunk-00002' + suffix), host_dir / ('chunk-00002' + suffix))
  with pytest.raises(ValueError, match='chunk-00002.done: written by another job'):
    _infer(model, directory, inputs, out)
  os.rename(host_dir / 'manifest.json', tmp_path / 'manifest.json')  # even without the manifest
  with pytest.raises(ValueError, match='chunk-00002.done: written by another job'):
    _infer(model, directory, inputs, out)
  assert not (host_dir / 'manifest.json').exists()
  os.rename(tmp_path / 'manifest.json', host_dir / 'manifest.json')
  for suffix in ('.jsonl', '.done'):
    os.remove(host_dir / ('chunk-00002' + suffix))
  resumed = _infer(model, directory, inputs, out)
  assert open(resumed).read() == full
  assert [json.loads(l)['index'] for l in full.splitlines()] == list(range(7))
  after = _snapshot(out)
  for name, (data, mtime) in partial.items():  # the chunks written before the stop were kept as they were
    assert after[name] == (data, mtime), name


# ------------------------------------------------------------------------------ eval and compare

def _evaluate(model, checkpoint_path, out, mixture='demo_support_zs'):
  return eval_lib.evaluate(model=model, checkpoint_path=checkpoint_path, output_dir=str(out),
                           mixture_or_task_name=mixture, task_feature_lengths={'inputs': 64, 'targets': 8},
                           batch_size=2, max_examples=2, rank_classification=False, partitioner=_partitioner())


def test_eval_records_the_checkpoint_and_compare_refuses_mixtures(model_dir, tmp_path, capsys):
  model, directory = model_dir
  step_20 = os.path.join(directory, 'checkpoint_20')
  base, tuned = tmp_path / 'base', tmp_path / 'tuned'
  _evaluate(model, step_20, base)
  _evaluate(model, directory, tuned)
  summary = json.loads((tuned / 'results.json').read_text())
  expected = checkpoint_import.checkpoint_fingerprint(directory)
  assert summary['checkpoint'] == expected and summary['step'] == 40
  task = json.loads((tuned / 'demo_support_zs.json').read_text())
  assert task['checkpoint'] == expected and task['step'] == 40
  assert task['decoding']['method'] == 'beam' and task['max_decode_length'] == 8  # T5X's default decode_fn

  assert compare.main([str(base), str(tuned), '--expect', f'base={step_20}', '--expect', f'tuned={directory}']) == 0
  assert '### demo_support_zs' in capsys.readouterr().out
  assert compare.main([str(base), str(tuned), '--expect', f'base={directory}']) == 2
  err = capsys.readouterr().err
  assert 'base: results come from' in err and 'step 20' in err and 'step 40' in err

  # Two runs that claim to differ but come from one checkpoint: a warning.
  again = tmp_path / 'tuned_again'
  _evaluate(model, os.path.join(directory, 'checkpoint_40'), again)
  capsys.readouterr()
  assert compare.main([str(tuned), str(again)]) == 0
  assert 'come from the same checkpoint' in capsys.readouterr().err

  # One dir holding another checkpoint's task file (e.g. an eval killed between its writes): refused.
  shutil.copy(base / 'demo_support_zs.json', tuned / 'demo_support_zs.json')
  assert compare.main([str(base), str(tuned)]) == 2
  assert 'mixes results of different checkpoints' in capsys.readouterr().err
  # Results of two evals merged into one results.json: refused too.
  merged = json.loads((again / 'results.json').read_text())
  merged['tasks']['from_base'] = json.loads((base / 'results.json').read_text())['tasks']['demo_support_zs']
  (again / 'results.json').write_text(json.dumps(merged))
  with pytest.raises(ValueError, match='results.json task from_base from .*step 20'):
    compare.compare([str(again)])

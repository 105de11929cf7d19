"""LoRA and prompt tuning: exactness at step 0, merge, frozen base, resume, base + adapter loading."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import adapters
from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import inference
from flan_t5x import lora
from flan_t5x import models
from flan_t5x import network
from flan_t5x import optimizers
from flan_t5x import partitioning
from flan_t5x import prompt_tuning

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
ENCODER = np.array([[5, 9, 17, 33, 2, 8, 1, 0], [12, 40, 7, 1, 0, 0, 0, 0]], np.int32)
DECODER_IN = np.array([[0, 3, 11, 25, 6], [0, 44, 19, 2, 1]], np.int32)
DECODER_TARGET = np.array([[3, 11, 25, 6, 1], [44, 19, 2, 1, 0]], np.int32)


def _batch(encoder=ENCODER):
  return {'encoder_input_tokens': jnp.asarray(encoder), 'decoder_input_tokens': jnp.asarray(DECODER_IN),
          'decoder_target_tokens': jnp.asarray(DECODER_TARGET)}


def _logits(model, params, encoder=ENCODER):
  return np.asarray(model.compute_logits(params, _batch(encoder), None))


def _base_params(seed=0, **config):
  return jax.tree.map(np.asarray, helpers.make_trainer(helpers.tiny_model(**config), seed=seed).init_state().params)


def _with_random_adapters(model, base, seed=1, b_std=0.1):
  """Base + adapters whose lora_b is non-zero (so the adapter changes the logits)."""
  full = jax.tree.map(np.asarray, models_unbox(model.init_params(jax.random.PRNGKey(seed), 1, 8, 8)))
  trainable, _ = adapters.split(full)
  leaves, tree = jax.tree_util.tree_flatten_with_path(trainable)
  keys = jax.random.split(jax.random.PRNGKey(seed + 7), len(leaves))
  noisy = [np.asarray(leaf + b_std * jax.random.normal(k, leaf.shape)) if 'lora_b' in jax.tree_util.keystr(p)
           else leaf for (p, leaf), k in zip(leaves, keys)]
  return adapters.combine(jax.tree_util.tree_unflatten(tree, noisy), base)


def models_unbox(tree):
  from flan_t5x import models  # pylint: disable=g-import-not-at-top
  return models.unbox(tree)


@pytest.mark.slow
@pytest.mark.parametrize('scan', [False, True])
def test_zero_b_is_the_base_model_and_merge_matches_adapter(scan):
  base = _base_params(scan_layers=scan)
  base_model = helpers.tiny_model(scan_layers=scan)
  model = helpers.tiny_model(scan_layers=scan, lora=lora.LoraConfig(rank=4, alpha=8.0, targets='all'))
  full = jax.tree.map(np.asarray, models_unbox(model.init_params(jax.random.PRNGKey(3), 1, 8, 8)))
  trainable, _ = adapters.split(full)
  assert all(not np.any(node['lora_b']) for node in _adapter_nodes(trainable))
  # 'all': q, k, v, o of every attention and wi_0, wi_1, wo: 7 per encoder layer, 11 per decoder layer.
  assert len(_adapter_nodes(trainable)) == (7 + 11 if scan else 2 * 7 + 2 * 11)
  # Zero-initialised B: exactly the base model's logits.
  np.testing.assert_array_equal(_logits(model, adapters.combine(trainable, base)), _logits(base_model, base))
  # Non-zero B: the merged base model gives the adapter model's logits.
  adapted = _with_random_adapters(model, base)
  ours = _logits(model, adapted)
  assert np.max(np.abs(ours - _logits(base_model, base))) > 1e-2  # the adapters matter
  merged = lora.merge(adapted, model.config.lora)
  assert not lora.adapted_modules(merged)
  np.testing.assert_allclose(_logits(base_model, merged), ours, rtol=0, atol=1e-5)


def _adapter_nodes(tree):
  return [node for path in lora.adapted_modules(tree) for node in [_get(tree, path)]]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def test_lora_targets_and_axes():
  model = helpers.tiny_model(lora=lora.LoraConfig(rank=4))
  layout = helpers.make_trainer(model).param_layout
  trainable, frozen = adapters.split(layout.logical_specs)
  paths = ['/'.join(p) for p in lora.adapted_modules(trainable)]
  # peft's T5 default: q and v of every attention, encoder self, decoder self and cross.
  assert len(paths) == 2 * 2 + 2 * 4 and all(p.endswith(('query', 'value')) for p in paths)
  query = trainable['encoder']['layers_0']['attention']['query']
  assert tuple(query['lora_a']) == ('embed', 'lora_rank') and tuple(query['lora_b']) == ('lora_rank', 'joined_kv')
  assert 'lora_a' not in str(frozen)
  with pytest.raises(ValueError, match="expected one of"):
    lora.LoraConfig(targets='qkv')
  with pytest.raises(ValueError, match='not a regular expression'):
    lora.LoraConfig(targets=['(query'])


@pytest.mark.slow
@pytest.mark.parametrize('optimizer,scan', [('adafactor', True), ('adamw', False)])
def test_only_adapters_train_and_have_optimizer_state(optimizer, scan):
  opt = optimizers.Adafactor() if optimizer == 'adafactor' else optimizers.AdamW()
  model = helpers.tiny_model(optimizer=opt, scan_layers=scan,
                             lora=lora.LoraConfig(rank=4, targets='all', dropout_rate=0.1))
  trainer = helpers.make_trainer(model)
  base = jax.tree.map(jnp.asarray, _base_params(scan_layers=scan))
  state = trainer.state_from_params(base)
  before = jax.tree.map(np.asarray, state.params)
  param_shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(state.params)}
  for leaf in jax.tree_util.tree_leaves(state.opt_state):
    # Adam moments / Adafactor statistics: adapter-shaped (or factored rows/cols of them, or scalars).
    assert leaf.size <= max(int(np.prod(s)) for s in param_shapes), leaf.shape
  opt_size = sum(x.size for x in jax.tree_util.tree_leaves(state.opt_state))
  assert opt_size <= 3 * adapters.count(state.params)
  for batch in _train_batches(3):
    state, metrics = trainer.train_step(state, batch)
    assert bool(metrics['finite'])
  after = jax.tree.map(np.asarray, state.params)
  assert jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(before)
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(before))]
  assert all(changed)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), trainer.frozen_params,
               _base_params(scan_layers=scan))


def _train_batches(n):
  from flan_t5x import data  # pylint: disable=g-import-not-at-top
  model = helpers.tiny_model()
  dataset = data.get_dataset(helpers.dataset_cfg(batch_size=8), model.feature_converter(True), seed=0, num_epochs=None)
  return [b for _, b in zip(range(n), data.InputIterator(dataset))]


@pytest.mark.slow
def test_lora_run_checkpoints_adapters_and_loads_as_base_plus_adapter(tmp_path):
  """(Resume after SIGKILL with the same losses: tests/engine/test_kill_resume.py, 'lora'.)"""
  base_path = checkpoint_import.save_params_checkpoint(_base_params(), str(tmp_path / 'base'))
  model = helpers.tiny_model(lora=lora.LoraConfig(rank=4, dropout_rate=0.1))
  helpers.run_training(tmp_path / 'straight', 4, model=model, initial_checkpoint=base_path, period=2)

  # The checkpoint holds adapters (and their optimizer state) only, and names its base.
  state_dir = checkpoints.resolve_state_dir(str(tmp_path / 'straight'))
  adapter_params, step = checkpoints.read_params(state_dir)
  assert step == 4 and lora.adapted_modules(adapter_params)
  assert all(p[-1] in ('lora_a', 'lora_b') for p in _leaf_paths(adapter_params))
  record = adapters.read_record(str(tmp_path / 'straight'))
  assert record['lora']['rank'] == 4
  assert checkpoint_import.same_checkpoint(record['base'], checkpoint_import.checkpoint_fingerprint(base_path))
  assert adapters.read_record(base_path) is None

  # eval/infer: the plain model given the adapter checkpoint becomes the adapted one.
  plain = helpers.tiny_model()
  adapted = inference.model_for_checkpoint(plain, str(tmp_path / 'straight'))
  assert adapted.config.lora == model.config.lora
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  params, step = inference.load_params(adapted, partitioner, str(tmp_path / 'straight'))
  expected = adapters.combine(adapter_params, _base_params())
  np.testing.assert_array_equal(_logits(adapted, params), _logits(adapted, jax.tree.map(jnp.asarray, expected)))
  fingerprint = inference.checkpoint_fingerprint(str(tmp_path / 'straight'))
  assert fingerprint['base']['sha256'] == record['base']['sha256']

  # Merge into the base: a plain checkpoint with the adapter model's logits.
  done = subprocess.run([sys.executable, '-m', 'flan_t5x.convert', 'merge-lora', str(tmp_path / 'straight'),
                         str(tmp_path / 'merged'), '--gin_file=' + _tiny_gin(tmp_path)],
                        cwd=helpers.REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  merged = checkpoint_import.load_params(str(tmp_path / 'merged'))
  np.testing.assert_allclose(_logits(plain, jax.tree.map(jnp.asarray, merged)), _logits(adapted, params),
                             rtol=0, atol=1e-5)

  # An adapter checkpoint as INITIAL_CHECKPOINT_PATH: its adapters and step, its base, a fresh optimizer.
  trainer = helpers.make_trainer(model)
  run_state = checkpoints.RunState(seed=0)
  state = adapters.initial_state(trainer, str(tmp_path / 'straight'), run_state)
  assert int(state.step) == 4 and run_state.peft == record
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state.params, adapter_params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), trainer.frozen_params,
               _base_params())

  # A changed base is refused, naming both fingerprints.
  other = checkpoint_import.save_params_checkpoint(_base_params(seed=5), str(tmp_path / 'other'))
  os.rename(base_path, str(tmp_path / 'moved'))
  os.rename(other, base_path)
  with pytest.raises(ValueError, match='base checkpoint changed'):
    inference.load_params(adapted, partitioner, str(tmp_path / 'straight'))
  with pytest.raises(ValueError, match='base checkpoint changed'):
    helpers.run_training(tmp_path / 'straight', 5, model=model, initial_checkpoint=base_path, period=2)


def _leaf_paths(tree):
  return [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _tiny_gin(tmp_path):
  path = tmp_path / 'tiny_model.gin'
  path.write_text(helpers.TINY_MODEL_GIN + '  num_encoder_layers = 2\n  num_decoder_layers = 2\n')
  return str(path)


def test_prompt_tuning_is_a_prefix_of_real_tokens():
  """A prompt equal to the embeddings of tokens t gives the base model's logits on input [t, x]:
  the prompt positions are valid in every mask and shift the input's relative positions."""
  base = jax.tree.map(jnp.asarray, _base_params())
  model = helpers.tiny_model(prompt_tuning=prompt_tuning.PromptTuningConfig(length=3, init='random'))
  prompt_ids = np.array([20, 31, 42], np.int32)
  adapter = {'prompt': {'prompt': base['token_embedder']['embedding'][prompt_ids]}}
  prefixed = np.concatenate([np.tile(prompt_ids, (2, 1)), ENCODER], axis=1)
  np.testing.assert_allclose(_logits(model, adapters.combine(adapter, base)),
                             _logits(helpers.tiny_model(), base, prefixed), rtol=0, atol=1e-5)
  # Cached decoding sees the prompt too: same tokens as the full-forward reference decoder.
  params = adapters.combine(adapter, base)
  cached, _ = decoding.predict_batch(model.module, params, jnp.asarray(ENCODER), 6)
  reference = decoding.greedy_without_cache(model, params, jnp.asarray(ENCODER), 6)
  np.testing.assert_array_equal(np.asarray(cached)[:, 0, :], np.asarray(reference))
  with pytest.raises(ValueError, match='unpacked batches'):
    model.compute_logits(params, {**_batch(), 'encoder_segment_ids': jnp.ones_like(ENCODER),
                                  'decoder_segment_ids': jnp.ones_like(DECODER_IN)}, None)


def test_prompt_from_vocabulary_samples_base_embeddings_and_trains_alone(tmp_path):
  base = _base_params()
  config = prompt_tuning.PromptTuningConfig(length=4, init='vocab', vocab_sample_size=50)
  model = helpers.tiny_model(prompt_tuning=config)
  trainer = helpers.make_trainer(model, lr=0.3)
  state = trainer.state_from_params(jax.tree.map(jnp.asarray, base))
  prompt = np.asarray(state.params['prompt']['prompt'])
  table = base['token_embedder']['embedding']
  assert prompt.shape == (4, table.shape[1])
  assert all(any(np.array_equal(row, table[i]) for i in range(50)) for row in prompt)
  assert jax.tree_util.tree_leaves(state.params) and set(state.params) == {'prompt'}
  unpacked = dataclasses.replace(helpers.dataset_cfg(batch_size=8), pack=False)
  from flan_t5x import data  # pylint: disable=g-import-not-at-top
  batch = next(iter(data.InputIterator(data.get_dataset(unpacked, model.feature_converter(False), seed=0,
                                                        num_epochs=None))))
  new_state, metrics = trainer.train_step(state, batch)
  assert bool(metrics['finite']) and not np.array_equal(np.asarray(new_state.params['prompt']['prompt']), prompt)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), trainer.frozen_params, base)


def test_peft_model_needs_a_base_checkpoint(tmp_path):
  model = helpers.tiny_model(lora=lora.LoraConfig(rank=2))
  with pytest.raises(ValueError, match='needs INITIAL_CHECKPOINT_PATH'):
    helpers.run_training(tmp_path / 'run', 1, model=model)


@pytest.mark.slow
def test_eight_devices_model_parallel_shard_adapters_and_match_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0',
             JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, os.path.join(HERE, 'peft_mesh_check.py')], env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  line = [l for l in done.stdout.splitlines() if l.startswith('PEFT_MESH_REPORT ')][-1]
  report = json.loads(line.split(' ', 1)[1])
  assert report['num_devices'] == 8
  one, mp = report['losses']['1'], report['losses']['dp4_mp2']
  np.testing.assert_allclose(mp, one, rtol=2e-5)
  np.testing.assert_allclose(report['losses']['dp8'], one, rtol=2e-5)
  spec = report['specs']['dp4_mp2']
  # lora_b of a query kernel shards its 'joined_kv' output over 'model' like the kernel.
  assert spec['query_lora_b'] == ['None', 'model'] and spec['query_lora_b_shard'] == [4, 16]
  assert spec['query_kernel'] == ['None', 'model'] and spec['query_lora_a'] == ['None', 'None']
  assert spec['wo_lora_a'] == ['model', 'None']
  np.testing.assert_allclose(report['adapter_sums']['dp4_mp2'], report['adapter_sums']['1'], rtol=1e-4)


def test_adapter_model_keeps_the_loss_settings_of_the_configured_model():
  base = models.EncoderDecoderModel(network.Transformer(helpers.tiny_config()), z_loss=0.0, label_smoothing=0.1,
                                    loss_normalizing_factor='NUM_REAL_TARGET_TOKENS', loss_vocab_chunk_width=None)
  record = {'lora': lora.LoraConfig(rank=2).to_json(), 'prompt_tuning': None}
  adapted = adapters.with_adapters(base, record, 'test')
  assert adapted.config.lora == lora.LoraConfig(rank=2) and base.config.lora is None
  for name in ('z_loss', 'label_smoothing', 'loss_normalizing_factor', 'loss_vocab_chunk_width',
               'optimizer_def', 'input_vocabulary'):
    assert getattr(adapted, name) == getattr(base, name), name

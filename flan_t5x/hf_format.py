"""Hugging Face T5 checkpoints <-> the engine's (T5X-named) parameter tree.

Reads config.json plus model.safetensors (single or sharded with model.safetensors.index.json), or
pytorch_model.bin (needs torch; read by a torch child process, flan_t5x.hf_peer); writes config.json +
model.safetensors (+ the SentencePiece model) that `transformers.T5ForConditionalGeneration.from_pretrained`
loads. No torch needed for safetensors.

HF Linear weights are (out, in); T5X kernels are (in, out): every kernel is a transpose. HF's
relative_attention_bias is (buckets, heads); T5X's rel_embedding is (heads, buckets).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from flan_t5x import file_modes
from flan_t5x import network

PyTree = Any
CONFIG_FILE = 'config.json'
SAFETENSORS_FILE = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
TORCH_FILE = 'pytorch_model.bin'
# Names HF may store as aliases of `shared.weight` (tied input embeddings); never needed.
_EMBEDDING_ALIASES = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')
_ACTIVATIONS = {'gated-gelu': ('gelu', 'linear'), 'gated-relu': ('relu', 'linear'), 'relu': ('relu',),
                'gelu': ('gelu',)}


def is_hf_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
      os.path.isfile(os.path.join(path, f)) for f in (SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE))


# -- config ------------------------------------------------------------------------------------------
def config_from_hf(hf: dict, dtype: str = 'bfloat16', dropout_rate: float | None = None
                   ) -> network.T5Config:
  """T5Config from an HF config.json dict (T5.1.1 / Flan-T5 gated activations, or T5 1.0 relu)."""
  if hf.get('model_type') not in (None, 't5'):
    raise ValueError(f"config.json: model_type {hf.get('model_type')!r} is not 't5'")
  projection = hf.get('feed_forward_proj', 'relu')
  if projection not in _ACTIVATIONS:
    raise ValueError(f'config.json: feed_forward_proj {projection!r} not supported; expected one of '
                     f'{sorted(_ACTIVATIONS)}')
  for key, expected in (('relative_attention_num_buckets', 32), ('relative_attention_max_distance', 128)):
    if hf.get(key, expected) != expected:
      raise ValueError(f'config.json: {key}={hf[key]} but the engine implements {expected}')
  return network.T5Config(
      vocab_size=hf['vocab_size'], emb_dim=hf['d_model'], num_heads=hf['num_heads'],
      num_encoder_layers=hf['num_layers'],
      num_decoder_layers=hf.get('num_decoder_layers') or hf['num_layers'], head_dim=hf['d_kv'],
      mlp_dim=hf['d_ff'], mlp_activations=_ACTIVATIONS[projection],
      dropout_rate=hf.get('dropout_rate', 0.1) if dropout_rate is None else dropout_rate,
      logits_via_embedding=_scales_logits(hf), dtype=dtype)


def _scales_logits(hf: dict) -> bool:
  """Whether logits = embedding^T h / sqrt(d_model) (original T5) rather than an lm_head (T5.1.1).

  transformers < 5 wrote `tie_word_embeddings` (False for T5.1.1/Flan-T5); transformers 5 always ties
  and writes `scale_decoder_outputs` instead, keeping lm_head.weight only when it differs.
  """
  if 'scale_decoder_outputs' in hf:
    return bool(hf['scale_decoder_outputs'])
  return bool(hf.get('tie_word_embeddings', True))


def _lm_head_may_alias_shared(hf: dict) -> bool:
  return 'scale_decoder_outputs' in hf and not hf['scale_decoder_outputs']


def hf_config_from(config: network.T5Config) -> dict:
  projection = {v: k for k, v in _ACTIVATIONS.items()}.get(tuple(config.mlp_activations))
  if projection is None:
    raise ValueError(f'mlp_activations {config.mlp_activations} has no Hugging Face equivalent')
  gated = len(config.mlp_activations) == 2
  return {
      'architectures': ['T5ForConditionalGeneration'], 'model_type': 't5',
      'vocab_size': config.vocab_size, 'd_model': config.emb_dim, 'd_kv': config.head_dim,
      'd_ff': config.mlp_dim, 'num_layers': config.num_encoder_layers,
      'num_decoder_layers': config.num_decoder_layers, 'num_heads': config.num_heads,
      'relative_attention_num_buckets': 32, 'relative_attention_max_distance': 128,
      'dropout_rate': config.dropout_rate, 'layer_norm_epsilon': 1e-6, 'initializer_factor': 1.0,
      'feed_forward_proj': projection, 'is_gated_act': gated,
      'dense_act_fn': ('gelu_new' if config.mlp_activations[0] == 'gelu' else 'relu'),
      'tie_word_embeddings': bool(config.logits_via_embedding), 'is_encoder_decoder': True,
      'use_cache': True, 'pad_token_id': 0, 'eos_token_id': 1, 'decoder_start_token_id': 0,
  }


# -- name mapping ------------------------------------------------------------------------------------
def _attention(hf_prefix: str, t5x_prefix: tuple) -> list:
  return [(f'{hf_prefix}.{hf}.weight', t5x_prefix + (t5x, 'kernel'), True)
          for hf, t5x in (('q', 'query'), ('k', 'key'), ('v', 'value'), ('o', 'out'))]


def _mlp(hf_prefix: str, t5x_prefix: tuple, gated: bool) -> list:
  inputs = (('wi_0', 'wi_0'), ('wi_1', 'wi_1')) if gated else (('wi', 'wi'),)
  return [(f'{hf_prefix}.DenseReluDense.{hf}.weight', t5x_prefix + ('mlp', t5x, 'kernel'), True)
          for hf, t5x in inputs + (('wo', 'wo'),)]


def name_map(config: network.T5Config) -> list[tuple[str, tuple, bool]]:
  """[(HF tensor name, T5X param path, transpose?)] for every tensor of the configuration."""
  gated = len(config.mlp_activations) == 2
  entries = [('shared.weight', ('token_embedder', 'embedding'), False)]
  for stack, norm in (('encoder', 'encoder_norm'), ('decoder', 'decoder_norm')):
    entries.append((f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
                    (stack, 'relpos_bias', 'rel_embedding'), True))
    entries.append((f'{stack}.final_layer_norm.weight', (stack, norm, 'scale'), False))
  for i in range(config.num_encoder_layers):
    hf, t5x = f'encoder.block.{i}', ('encoder', f'layers_{i}')
    entries += _attention(f'{hf}.layer.0.SelfAttention', t5x + ('attention',))
    entries += [(f'{hf}.layer.0.layer_norm.weight', t5x + ('pre_attention_layer_norm', 'scale'), False),
                (f'{hf}.layer.1.layer_norm.weight', t5x + ('pre_mlp_layer_norm', 'scale'), False)]
    entries += _mlp(f'{hf}.layer.1', t5x, gated)
  for i in range(config.num_decoder_layers):
    hf, t5x = f'decoder.block.{i}', ('decoder', f'layers_{i}')
    entries += _attention(f'{hf}.layer.0.SelfAttention', t5x + ('self_attention',))
    entries += _attention(f'{hf}.layer.1.EncDecAttention', t5x + ('encoder_decoder_attention',))
    entries += [
        (f'{hf}.layer.0.layer_norm.weight', t5x + ('pre_self_attention_layer_norm', 'scale'), False),
        (f'{hf}.layer.1.layer_norm.weight', t5x + ('pre_cross_attention_layer_norm', 'scale'), False),
        (f'{hf}.layer.2.layer_norm.weight', t5x + ('pre_mlp_layer_norm', 'scale'), False)]
    entries += _mlp(f'{hf}.layer.2', t5x, gated)
  if not config.logits_via_embedding:
    entries.append(('lm_head.weight', ('decoder', 'logits_dense', 'kernel'), True))
  return entries


def expected_shape(path: tuple, config: network.T5Config) -> tuple:
  """Shape the model has for the parameter at T5X `path`."""
  e, joined, m = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  leaf, parent = path[-1], path[-2]
  if parent == 'token_embedder':
    return (config.vocab_size, e)
  if parent == 'relpos_bias':
    return (config.num_heads, 32)
  if leaf == 'scale':
    return (e,)
  if parent in ('query', 'key', 'value'):
    return (e, joined)
  if parent == 'out':
    return (joined, e)
  if parent in ('wi', 'wi_0', 'wi_1'):
    return (e, m)
  if parent == 'wo':
    return (m, e)
  if parent == 'logits_dense':
    return (e, config.vocab_size)
  raise ValueError(f'no shape rule for {"/".join(path)}')


# -- reading -----------------------------------------------------------------------------------------
def read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no config.json; not a Hugging Face checkpoint directory') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON ({e.msg})') from None


def read_tensors(directory: str) -> dict[str, np.ndarray]:
  """All tensors of an HF checkpoint as numpy arrays (safetensors without torch; .bin via a torch child)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  index_path = os.path.join(directory, SAFETENSORS_INDEX)
  single_path = os.path.join(directory, SAFETENSORS_FILE)
  if os.path.isfile(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)['weight_map']
    tensors = {}
    for shard in sorted(set(weight_map.values())):
      tensors.update(load_file(os.path.join(directory, shard)))
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
      raise ValueError(f'{index_path}: tensors listed but absent from the shards: {missing[:10]}')
    return tensors
  if os.path.isfile(single_path):
    return load_file(single_path)
  torch_path = os.path.join(directory, TORCH_FILE)
  if os.path.isfile(torch_path):
    return _read_torch_file(torch_path)
  raise FileNotFoundError(f'{directory}: no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {TORCH_FILE}')


def _read_torch_file(torch_path: str) -> dict[str, np.ndarray]:
  """pytorch_model.bin via a torch child process (torch next to JAX/TensorFlow segfaults)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  from flan_t5x import hf_peer_client  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix='flan_bin_') as tmp:
    out = os.path.join(tmp, SAFETENSORS_FILE)
    try:
      # No timeout: a multi-GB .bin on a slow disk may take long; a crash still ends the child.
      hf_peer_client.call('read-bin', {'path': os.path.abspath(torch_path), 'out': out}, timeout=None)
    except hf_peer_client.HFPeerUnavailable:
      raise ImportError(f'{torch_path}: reading pytorch_model.bin needs torch (pip install '
                        "'flan-t5x[bench]'); safetensors checkpoints need no torch") from None
    except hf_peer_client.HFPeerError as e:
      raise ValueError(f'{torch_path}: could not read it with torch: {e}') from None
    return load_file(out)


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def tensors_to_params(tensors: dict[str, np.ndarray], config: network.T5Config,
                      dtype: np.dtype | str = np.float32, source: str = '<tensors>',
                      lm_head_may_alias_shared: bool = False) -> PyTree:
  """HF tensors -> nested param dict; one error lists every missing, unexpected and mismatched tensor.

  `lm_head_may_alias_shared`: a transformers-5 T5.1.1 checkpoint whose lm_head equals the shared
  embedding stores only `shared.weight`; the logits kernel is then that embedding, transposed.
  """
  if (lm_head_may_alias_shared and not config.logits_via_embedding and
      'lm_head.weight' not in tensors and 'shared.weight' in tensors):
    tensors = {**tensors, 'lm_head.weight': tensors['shared.weight']}
  entries = name_map(config)
  known = {name for name, _, _ in entries}
  missing = sorted(known - set(tensors))
  unexpected = sorted(set(tensors) - known - set(_EMBEDDING_ALIASES) - (
      {'lm_head.weight'} if config.logits_via_embedding else set()))
  mismatched, params = [], {}
  for name, path, transpose in entries:
    if name not in tensors:
      continue
    value = np.asarray(tensors[name])
    value = value.T if transpose else value
    expected = expected_shape(path, config)
    if value.shape != expected:
      mismatched.append(f'{name}: {tuple(tensors[name].shape)} (as {"/".join(path)}: {value.shape}, '
                        f'model expects {expected})')
      continue
    _set(params, path, np.ascontiguousarray(value.astype(dtype)))
  raise_if_mismatched(f'{source}: checkpoint does not match the model configuration', missing,
                      unexpected, mismatched)
  return params


def raise_if_mismatched(headline: str, missing, unexpected, mismatched) -> None:
  """One ValueError listing every missing, unexpected and mismatched tensor (20 of each at most)."""
  if not (missing or unexpected or mismatched):
    return
  lines = [headline]
  for title, items in (('missing', missing), ('unexpected', unexpected), ('mismatched', mismatched)):
    if items:
      lines.append(f'  {title} ({len(items)}): ' + '; '.join(items[:20]) +
                   (' ...' if len(items) > 20 else ''))
  raise ValueError('\n'.join(lines))


def params_to_tensors(params: PyTree, config: network.T5Config,
                      dtype: np.dtype | str = np.float32) -> dict[str, np.ndarray]:
  tensors = {}
  for name, path, transpose in name_map(config):
    value = np.asarray(_get(params, path), dtype=dtype)
    tensors[name] = np.ascontiguousarray(value.T if transpose else value)
  return tensors


def check_vocab_size(checkpoint_vocab: int, model_vocab: int, source: str) -> None:
  if checkpoint_vocab != model_vocab:
    raise ValueError(f'{source}: checkpoint vocab_size {checkpoint_vocab} but the model has vocab_size '
                     f'{model_vocab}; use the model gin file matching the checkpoint (e.g. '
                     'gin/models/flan_t5_small.gin, vocab 32128) or a checkpoint of this vocabulary')


def load(directory: str, model_config: network.T5Config | None = None,
         dtype: np.dtype | str = np.float32) -> tuple[PyTree, network.T5Config]:
  """(params, config) of an HF checkpoint; with `model_config`, checks the two agree first."""
  hf_config = read_config(directory)
  checkpoint_config = config_from_hf(hf_config, dtype=model_config.dtype if model_config else 'bfloat16')
  if model_config is not None:
    check_vocab_size(checkpoint_config.vocab_size, model_config.vocab_size, directory)
    fields = ('emb_dim', 'num_heads', 'num_encoder_layers', 'num_decoder_layers', 'head_dim',
              'mlp_dim', 'mlp_activations', 'logits_via_embedding')
    differ = [f'{f}: checkpoint {getattr(checkpoint_config, f)} vs model {getattr(model_config, f)}'
              for f in fields if getattr(checkpoint_config, f) != getattr(model_config, f)]
    if differ:
      raise ValueError(f'{directory}: checkpoint config differs from the model: ' + '; '.join(differ))
  params = tensors_to_params(read_tensors(directory), checkpoint_config, dtype, directory,
                             lm_head_may_alias_shared=_lm_head_may_alias_shared(hf_config))
  return params, checkpoint_config


def _apply_umask(directory: str) -> None:
  """Files written into `directory` get open()'s mode under the umask (safetensors writes 0600)."""
  for parent, _, files in os.walk(directory):
    for name in files:
      os.chmod(os.path.join(parent, name), file_modes.file_mode())


@contextlib.contextmanager
def new_directory_atomically(directory: str):
  """Yields a temporary directory beside `directory`, renamed to it when the block succeeds.

  Nothing is left half-written: on any error the temporary directory is removed. An existing
  non-empty `directory` is refused. The directory gets os.makedirs' mode under the umask.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and os.listdir(directory):
    raise FileExistsError(f'{directory} exists and is not empty')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(directory) + '.tmp')
  try:
    os.chmod(tmp, file_modes.directory_mode())  # mkdtemp makes it 0700 whatever the umask
    yield tmp
    _apply_umask(tmp)
    if os.path.exists(directory):
      os.rmdir(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def save(params: PyTree, config: network.T5Config, directory: str, vocab_path: str | None = None,
         dtype: np.dtype | str = np.float32) -> None:
  """Writes an HF checkpoint directory atomically (a temp dir renamed into place)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  with new_directory_atomically(directory) as tmp:
    save_file(params_to_tensors(params, config, dtype), os.path.join(tmp, SAFETENSORS_FILE),
              metadata={'format': 'pt'})
    with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
      json.dump(hf_config_from(config), f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, 'generation_config.json'), 'w') as f:
      json.dump({'decoder_start_token_id': 0, 'eos_token_id': 1, 'pad_token_id': 0}, f, indent=2)
    if vocab_path:
      shutil.copyfile(vocab_path, os.path.join(tmp, 'spiece.model'))
      with open(os.path.join(tmp, 'tokenizer_config.json'), 'w') as f:
        json.dump({'tokenizer_class': 'T5Tokenizer', 'extra_ids': 100, 'model_max_length': 512,
                   'eos_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>'}, f, indent=2)

"""Hugging Face format import/export: fixture parity without torch, transformers parity with it."""
import dataclasses
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from flan_t5x import checkpoint_import, hf_format, models, network

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "tiny_hf_t5"
HAS_TRANSFORMERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="torch/transformers not installed")


def _logits(params, config, encoder, decoder_inputs, decoder_targets):
  model = models.EncoderDecoderModel(network.Transformer(config))
  batch = {"encoder_input_tokens": jnp.asarray(encoder),
           "decoder_input_tokens": jnp.asarray(decoder_inputs),
           "decoder_target_tokens": jnp.asarray(decoder_targets)}
  return np.asarray(model.compute_logits(jax.tree_util.tree_map(jnp.asarray, params), batch, None))


def _greedy(params, config, encoder, steps):
  """Reference greedy decoding: full forward per step (no cache)."""
  decoded = np.zeros((encoder.shape[0], steps + 1), np.int32)
  for t in range(steps):
    logits = _logits(params, config, encoder, decoded[:, :t + 1], np.ones_like(decoded[:, :t + 1]))
    decoded[:, t + 1] = logits[:, t].argmax(-1)
  return decoded[:, 1:]


def _fp32(config):
  return dataclasses.replace(config, dtype="float32", dropout_rate=0.0)


def test_fixture_import_matches_transformers_logits():
  reference = np.load(FIXTURE / "reference.npz")
  params, config = hf_format.load(str(FIXTURE), dtype=np.float32)
  # transformers 5 stored the tied-but-unscaled (T5.1.1) head as shared.weight only.
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                params["token_embedder"]["embedding"].T)
  logits = _logits(params, _fp32(config), reference["encoder_input_tokens"],
                   reference["decoder_input_tokens"], reference["decoder_target_tokens"])
  assert np.max(np.abs(logits - reference["logits"])) < 1e-4
  greedy = _greedy(params, _fp32(config), reference["encoder_input_tokens"],
                   reference["greedy_tokens"].shape[1])
  np.testing.assert_array_equal(greedy, reference["greedy_tokens"])


def test_mismatch_lists_missing_unexpected_and_mismatched(tmp_path):
  tensors = load_file(FIXTURE / "model.safetensors")
  del tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
  tensors["encoder.block.7.layer.0.layer_norm.weight"] = np.ones(16, np.float32)
  tensors["decoder.final_layer_norm.weight"] = np.ones(15, np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
  with pytest.raises(ValueError) as err:
    hf_format.load(str(tmp_path))
  message = str(err.value)
  assert "missing (1): encoder.block.1.layer.1.DenseReluDense.wo.weight" in message
  assert "unexpected (1): encoder.block.7.layer.0.layer_norm.weight" in message
  assert "mismatched (1): decoder.final_layer_norm.weight: (15,)" in message


def test_model_config_must_match_checkpoint():
  _, config = hf_format.load(str(FIXTURE))
  with pytest.raises(ValueError, match="vocab_size 64 but the model has vocab_size 128"):
    hf_format.load(str(FIXTURE), dataclasses.replace(config, vocab_size=128))
  with pytest.raises(ValueError, match="mlp_dim: checkpoint 24 vs model 32"):
    hf_format.load(str(FIXTURE), dataclasses.replace(config, mlp_dim=32))


def test_sharded_safetensors_index(tmp_path):
  tensors = load_file(FIXTURE / "model.safetensors")
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  for shard, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
  (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
  sharded, _ = hf_format.load(str(tmp_path))
  single, _ = hf_format.load(str(FIXTURE))
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharded, single)


def test_convert_cli_hf_to_t5x_is_an_initial_checkpoint(tmp_path):
  result = subprocess.run([sys.executable, "-m", "flan_t5x.convert", "hf-to-t5x", str(FIXTURE),
                           str(tmp_path / "model")], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout)
  assert summary["parameters"] > 0
  original, config = hf_format.load(str(FIXTURE))
  restored = checkpoint_import.load_params(str(tmp_path / "model"), config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, original)


def test_round_trip_hf_engine_hf_is_bit_identical(tmp_path):
  params, config = hf_format.load(str(FIXTURE))
  hf_format.save(params, config, str(tmp_path / "out"))
  before, after = load_file(FIXTURE / "model.safetensors"), load_file(tmp_path / "out/model.safetensors")
  for name, value in before.items():
    assert after[name].dtype == value.dtype and after[name].tobytes() == value.tobytes(), name
  again, _ = hf_format.load(str(tmp_path / "out"))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), again, params)
  with pytest.raises(FileExistsError):
    hf_format.save(params, config, str(tmp_path / "out"))


def _random_engine_params(config, seed=0):
  model = models.EncoderDecoderModel(network.Transformer(config))
  params = models.unbox(model.init_params(jax.random.PRNGKey(seed), 2, 8, 8))
  # Norm scales start at one: perturb every leaf so each mapping is exercised.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [np.asarray(x + 0.1 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, leaves)


@needs_transformers
@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers_with_same_logits_and_greedy_tokens(tmp_path, tied):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  # Equal depths: transformers 5.23's generate() cache breaks when decoder depth != encoder depth.
  config = network.T5Config(vocab_size=96, emb_dim=16, num_heads=2, num_encoder_layers=2,
                            num_decoder_layers=2, head_dim=8, mlp_dim=24, dropout_rate=0.0,
                            dtype="float32", logits_via_embedding=tied)
  params = _random_engine_params(config)
  hf_format.save(params, config, str(tmp_path / "hf"))
  model = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
  encoder = np.array([[5, 9, 17, 33, 2, 8, 1], [12, 40, 7, 1, 0, 0, 0]], np.int32)
  decoder_inputs = np.array([[0, 3, 11, 25], [0, 44, 19, 2]], np.int32)
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(encoder, dtype=torch.long),
                   attention_mask=torch.tensor(encoder > 0, dtype=torch.long),
                   decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long)).logits.numpy()
    generated = model.generate(input_ids=torch.tensor(encoder, dtype=torch.long),
                               attention_mask=torch.tensor(encoder > 0, dtype=torch.long),
                               do_sample=False, num_beams=1, max_new_tokens=6,
                               min_new_tokens=6).numpy()[:, 1:]
  ours = _logits(params, config, encoder, decoder_inputs, np.ones_like(decoder_inputs))
  assert np.max(np.abs(ours - theirs)) < 1e-4
  np.testing.assert_array_equal(_greedy(params, config, encoder, 6), generated)

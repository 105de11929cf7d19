"""Hugging Face format import/export: fixture parity without torch, transformers parity with it.

transformers runs only in the flan_t5x.hf_peer child process (never next to JAX here); tests marked
`hf` need torch + transformers and are what `make test-hf` runs (see tests/conftest.py).
"""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from flan_t5x import checkpoint_import, hf_format, hf_peer_client, host_memory, models, network

from tests.conftest import HAS_TORCH_PEER

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "tiny_hf_t5"


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


@pytest.mark.hf
@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers_with_same_logits_and_greedy_tokens(tmp_path, tied):
  # Equal depths: transformers 5.23's generate() cache breaks when decoder depth != encoder depth.
  config = network.T5Config(vocab_size=96, emb_dim=16, num_heads=2, num_encoder_layers=2,
                            num_decoder_layers=2, head_dim=8, mlp_dim=24, dropout_rate=0.0,
                            dtype="float32", logits_via_embedding=tied)
  params = _random_engine_params(config)
  hf_format.save(params, config, str(tmp_path / "hf"))
  encoder = np.array([[5, 9, 17, 33, 2, 8, 1], [12, 40, 7, 1, 0, 0, 0]], np.int32)
  decoder_inputs = np.array([[0, 3, 11, 25], [0, 44, 19, 2]], np.int32)
  _, theirs = hf_peer_client.call(
      "forward", {"model_dir": str(tmp_path / "hf"), "greedy_tokens": 6},
      {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder_inputs})
  ours = _logits(params, config, encoder, decoder_inputs, np.ones_like(decoder_inputs))
  assert theirs["logits"].shape == ours.shape
  assert np.max(np.abs(ours - theirs["logits"])) < 1e-4
  np.testing.assert_array_equal(_greedy(params, config, encoder, 6), theirs["greedy_tokens"])


@pytest.mark.hf
def test_fixture_import_matches_transformers_computed_live():
  # The committed reference.npz was made by one transformers version; this is the installed one.
  reference = np.load(FIXTURE / "reference.npz")
  steps = reference["greedy_tokens"].shape[1]
  response, theirs = hf_peer_client.call(
      "forward", {"model_dir": str(FIXTURE), "greedy_tokens": steps},
      {k: reference[k] for k in ("encoder_input_tokens", "decoder_input_tokens")})
  assert response["transformers"] and response["forbidden_modules"] == []
  params, config = hf_format.load(str(FIXTURE), dtype=np.float32)
  ours = _logits(params, _fp32(config), reference["encoder_input_tokens"],
                 reference["decoder_input_tokens"], reference["decoder_target_tokens"])
  assert theirs["logits"].shape == ours.shape
  assert np.max(np.abs(ours - theirs["logits"])) < 1e-4
  np.testing.assert_array_equal(
      _greedy(params, _fp32(config), reference["encoder_input_tokens"], steps), theirs["greedy_tokens"])


def _fixture_as_torch_file(directory, dtype=None):
  directory.mkdir()
  (directory / "config.json").write_text((FIXTURE / "config.json").read_text())
  hf_peer_client.call("write-bin", {"safetensors": str(FIXTURE / "model.safetensors"),
                                    "out": str(directory / "pytorch_model.bin"), "dtype": dtype})
  return directory


@pytest.mark.hf
def test_pytorch_model_bin_is_read_through_the_torch_child(tmp_path):
  directory = _fixture_as_torch_file(tmp_path / "bin")
  assert hf_format.is_hf_checkpoint(str(directory))
  from_bin, config = hf_format.load(str(directory))
  from_safetensors, _ = hf_format.load(str(FIXTURE))
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_bin, from_safetensors)
  assert config == hf_format.load(str(FIXTURE))[1]


@pytest.mark.hf
def test_bfloat16_pytorch_model_bin_is_widened_to_float32(tmp_path):
  directory = _fixture_as_torch_file(tmp_path / "bin", dtype="bfloat16")
  from_bin, _ = hf_format.load(str(directory), dtype=np.float32)
  from_safetensors, _ = hf_format.load(str(FIXTURE), dtype=np.float32)
  rounded = jax.tree_util.tree_map(lambda x: np.asarray(x.astype(jnp.bfloat16), np.float32),
                                   from_safetensors)
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_bin, rounded)
  assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(  # bf16 really dropped bits
      np.array_equal, from_bin, from_safetensors)))


@pytest.mark.hf
def test_corrupt_pytorch_model_bin_names_the_file(tmp_path):
  (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
  (tmp_path / "pytorch_model.bin").write_bytes(b"not a torch file")
  with pytest.raises(ValueError, match=r"pytorch_model.bin: could not read it with torch: .*stderr"):
    hf_format.load(str(tmp_path))


@pytest.mark.skipif(HAS_TORCH_PEER, reason="checks the message shown when torch is not installed")
def test_pytorch_model_bin_without_torch_names_the_extra(tmp_path):
  (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
  (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
  with pytest.raises(ImportError, match=r"pytorch_model.bin: reading pytorch_model.bin needs torch .*bench"):
    hf_format.load(str(tmp_path))


@pytest.mark.hf(requires_torch=False)
def test_torch_child_never_imports_jax_or_tensorflow():
  assert "torch" not in sys.modules  # this process (JAX, TensorFlow loaded) never imports torch
  response, _ = hf_peer_client.call("probe")
  # The probe imports what every command imports (torch + transformers' T5 when installed).
  assert response["forbidden_modules"] == []
  assert response["torch_available"] == HAS_TORCH_PEER
  # The guard is live: a child that does import JAX is refused, naming it.
  with pytest.raises(hf_peer_client.HFPeerError, match=r"imported \['jax'"):
    hf_peer_client.call("probe", {"extra_imports": ["jax"]})


def test_peer_crash_by_signal_is_reported_as_a_segfault(tmp_path, monkeypatch):
  # A real SIGSEGV in the child (the failure this isolation exists for) must read as one.
  (tmp_path / "flan_segfault_on_import.py").write_text("import faulthandler\nfaulthandler._sigsegv()\n")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
  with pytest.raises(hf_peer_client.HFPeerError,
                     match=r"(?s)hf_peer probe crashed with a segmentation fault \(SIGSEGV\).*stderr tail"):
    hf_peer_client.call("probe", {"extra_imports": ["flan_segfault_on_import"]})


@pytest.mark.hf
@pytest.mark.skipif(not HAS_TORCH_PEER, reason="torch + transformers not installed (pip install -e '.[bench]')")
def test_train_to_quality_starts_from_our_weights_and_trains(tmp_path):
  """The time-to-quality peer: same initial validation loss as ours, then 3 Adafactor steps."""
  config = network.T5Config(vocab_size=384, emb_dim=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                            head_dim=16, mlp_dim=64, dropout_rate=0.0, dtype="float32")
  model = models.EncoderDecoderModel(network.Transformer(config), z_loss=0.0,
                                     loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
  params = jax.tree_util.tree_map(np.asarray, models.unbox(model.init_params(jax.random.PRNGKey(0), 2, 12, 6)))
  hf_format.save(params, config, str(tmp_path / "init"))
  rng = np.random.RandomState(0)
  targets = rng.randint(2, 384, size=(6, 6)).astype(np.int32)
  targets[:, -1] = 0
  inputs = rng.randint(2, 384, size=(6, 12)).astype(np.int32)
  decoder_inputs = np.concatenate([np.zeros((6, 1), np.int32), targets[:, :-1]], axis=1)
  arrays = {"order": np.asarray([0, 1, 2, 3, 4, 5], np.int32), "train_inputs": inputs,
            "train_decoder_inputs": decoder_inputs, "train_targets": targets, "val_inputs": inputs[:4],
            "val_decoder_inputs": decoder_inputs[:4], "val_targets": targets[:4]}
  request = {"model_dir": str(tmp_path / "init"), "lr": 1e-2, "batch_size": 2, "budget_s": 600,
             "eval_every_s": 600, "decode_length": 5, "eval_batch_size": 2, "seed": 0, "num_threads": 1}
  response, outputs = hf_peer_client.call("train-to-quality", request, arrays)
  batch = {"encoder_input_tokens": inputs[:4], "decoder_input_tokens": decoder_inputs[:4],
           "decoder_target_tokens": targets[:4]}
  _, metrics = model.loss_fn(jax.tree_util.tree_map(jnp.asarray, params), batch, None)
  ours_initial = float(metrics["cross_ent_sum"]) / float(metrics["num_tokens"])
  curve = response["curve"]
  assert response["steps"] == 3  # the order holds 3 batches of 2
  assert abs(curve[0]["val_loss"] - ours_initial) < 1e-4
  assert curve[-1]["step"] == 3 and curve[-1]["val_loss"] < curve[0]["val_loss"]
  assert outputs["val_decoded"].shape == (4, 5)


@pytest.mark.hf
@pytest.mark.skipif(not HAS_TORCH_PEER, reason="torch + transformers not installed (pip install -e '.[bench]')")
def test_train_timing_peer_has_an_untied_head_like_ours():
  """bench/train_throughput.py's peer stands for a T5.1.1 model: own lm_head, as many parameters as ours
  (transformers 5 ties every fresh T5's head to the embedding unless hf_peer unties it)."""
  config = network.T5Config(vocab_size=384, emb_dim=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                            head_dim=16, mlp_dim=64, dropout_rate=0.0, dtype="float32")
  ours = models.EncoderDecoderModel(network.Transformer(config)).init_params(jax.random.PRNGKey(0), 2, 8, 4)
  hf_config = dict(vocab_size=384, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
  rng = np.random.RandomState(0)
  targets = rng.randint(2, 384, size=(2, 4)).astype(np.int32)
  arrays = {"encoder_input_tokens": rng.randint(2, 384, size=(2, 8)).astype(np.int32),
            "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))), "decoder_target_tokens": targets}
  response, _ = hf_peer_client.call("train-timing", {"config": hf_config, "steps": 1, "lr": 1e-3}, arrays)
  assert response["params"] == sum(x.size for x in jax.tree_util.tree_leaves(models.unbox(ours)))
  assert np.isfinite(response["loss"])
  assert response["keep_freed_host_memory"] is False  # glibc's defaults unless asked
  # The peer on equal terms: the same glibc settings as our jobs (flan_t5x/host_memory.py).
  kept, _ = hf_peer_client.call("train-timing", {"config": hf_config, "steps": 1, "lr": 1e-3,
                                                 "keep_freed_host_memory": True}, arrays)
  assert kept["keep_freed_host_memory"] is host_memory.is_glibc()
  assert kept["loss"] == pytest.approx(response["loss"], rel=1e-5)

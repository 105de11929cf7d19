"""LoRA adapters in Hugging Face peft's format: export -> PeftModel.from_pretrained, and peft -> import.

peft, transformers and torch run only in the flan_t5x.hf_peer child process. Marked `hf(peft=True)`:
`make test-hf` runs these with FLAN_REQUIRE_HF=1 (the bench extra installs peft).
"""
import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import adapters, checkpoint_import, gin_utils, hf_format, hf_peer_client, inference, lora
from flan_t5x import models, network, partitioning, peft_format

# Equal depths: transformers' generate() cache needs decoder depth == encoder depth.
CONFIG = network.T5Config(vocab_size=96, emb_dim=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                          head_dim=8, mlp_dim=24, dropout_rate=0.0, dtype="float32")
ENCODER = np.array([[5, 9, 17, 33, 2, 8, 1], [12, 40, 7, 1, 0, 0, 0]], np.int32)
DECODER_IN = np.array([[0, 3, 11, 25], [0, 44, 19, 2]], np.int32)


def _model(config):
  return models.EncoderDecoderModel(network.Transformer(config))


def _logits(config, params, decoder_inputs=DECODER_IN):
  batch = {"encoder_input_tokens": jnp.asarray(ENCODER), "decoder_input_tokens": jnp.asarray(decoder_inputs),
           "decoder_target_tokens": jnp.ones_like(jnp.asarray(decoder_inputs))}
  return np.asarray(_model(config).compute_logits(jax.tree.map(jnp.asarray, params), batch, None))


def _greedy(config, params, steps):
  decoded = np.zeros((ENCODER.shape[0], steps + 1), np.int32)
  for t in range(steps):
    decoded[:, t + 1] = _logits(config, params, decoded[:, :t + 1])[:, t].argmax(-1)
  return decoded[:, 1:]


def _random_params(config, seed):
  """Every leaf random (norm scales too), lora_b non-zero: each mapping matters."""
  params = models.unbox(_model(config).init_params(jax.random.PRNGKey(seed), 1, 8, 8))
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree_util.tree_unflatten(tree, [np.asarray(x + 0.1 * jax.random.normal(k, x.shape))
                                             for x, k in zip(leaves, keys)])


def _convert(*args):
  done = subprocess.run([sys.executable, "-m", "flan_t5x.convert", *args], cwd=gin_utils.REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout[done.stdout.index("{"):])


@pytest.mark.hf(peft=True)
@pytest.mark.parametrize("targets", ["qv", "all"])
def test_exported_adapter_loads_in_peft_with_our_logits_and_greedy_tokens(tmp_path, targets):
  lora_cfg = lora.LoraConfig(rank=4, alpha=8.0, targets=targets)
  config = dataclasses.replace(CONFIG, lora=lora_cfg)
  full = _random_params(config, seed=0)
  adapter_params, base = adapters.split(full)
  hf_format.save(base, CONFIG, str(tmp_path / "base_hf"))
  # An adapter checkpoint on the exported base, then the command-line export.
  record = adapters.record_for(config, checkpoint_import.checkpoint_fingerprint(str(tmp_path / "base_hf")))
  adapters.write_adapter_checkpoint(adapter_params, record, str(tmp_path / "adapter"))
  summary = _convert("export-peft", str(tmp_path / "adapter"), str(tmp_path / "peft"))
  expected_modules = ["q", "v"] if targets == "qv" else ["k", "o", "q", "v", "wi_0", "wi_1", "wo"]
  assert sorted(summary["target_modules"]) == expected_modules
  saved = json.loads((tmp_path / "peft" / peft_format.CONFIG_FILE).read_text())
  assert saved["r"] == 4 and saved["lora_alpha"] == 8.0 and saved["peft_type"] == "LORA"

  response, theirs = hf_peer_client.call(
      "peft-forward", {"model_dir": str(tmp_path / "base_hf"), "adapter_dir": str(tmp_path / "peft"),
                       "greedy_tokens": 5},
      {"encoder_input_tokens": ENCODER, "decoder_input_tokens": DECODER_IN})
  assert response["lora_parameters"] == adapters.count(adapter_params)
  ours = _logits(config, full)
  assert np.max(np.abs(ours - _logits(CONFIG, base))) > 1e-2  # the adapter changes the model
  assert np.max(np.abs(ours - theirs["logits"])) < 1e-4
  np.testing.assert_array_equal(_greedy(config, full, 5), theirs["greedy_tokens"])

  # merge-lora --hf: transformers alone (no peft) gives the same logits.
  _convert("merge-lora", str(tmp_path / "adapter"), str(tmp_path / "merged_hf"), "--hf")
  _, merged = hf_peer_client.call("forward", {"model_dir": str(tmp_path / "merged_hf")},
                                  {"encoder_input_tokens": ENCODER, "decoder_input_tokens": DECODER_IN})
  assert np.max(np.abs(ours - merged["logits"])) < 1e-4


@pytest.mark.hf(peft=True)
def test_peft_made_adapter_imports_and_reproduces_peft_logits(tmp_path):
  base = _random_params(CONFIG, seed=3)
  hf_format.save(base, CONFIG, str(tmp_path / "base_hf"))
  response, theirs = hf_peer_client.call(
      "peft-make-adapter", {"model_dir": str(tmp_path / "base_hf"), "out_dir": str(tmp_path / "peft"),
                            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                                     "target_modules": ["q", "v", "wo"]},
                            "seed": 0, "b_std": 0.1, "greedy_tokens": 5},
      {"encoder_input_tokens": ENCODER, "decoder_input_tokens": DECODER_IN})
  assert "adapter_model.safetensors" in response["files"]
  summary = _convert("import-peft", str(tmp_path / "peft"), str(tmp_path / "imported"),
                     "--base", str(tmp_path / "base_hf"))
  assert summary["lora"]["rank"] == 8 and summary["lora"]["alpha"] == 16.0
  # eval/infer's path: the plain model becomes the adapted one; base + adapter loaded.
  plain = _model(CONFIG)
  model = inference.model_for_checkpoint(plain, str(tmp_path / "imported"))
  assert model.config.lora.targets == (".*attention/(query|value)", ".*mlp/(wo)")
  params, _ = inference.load_params(model, partitioning.PjitPartitioner(devices=jax.devices()[:1]),
                                    str(tmp_path / "imported"))
  params = jax.tree.map(np.asarray, params)
  ours = _logits(model.config, params)
  assert np.max(np.abs(ours - _logits(CONFIG, base))) > 1e-2
  assert np.max(np.abs(ours - theirs["logits"])) < 1e-4
  np.testing.assert_array_equal(_greedy(model.config, params, 5), theirs["greedy_tokens"])


def test_peft_import_errors_name_the_file_and_field(tmp_path):
  directory = tmp_path / "peft"
  directory.mkdir()
  (directory / peft_format.CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                               "target_modules": ["q"], "use_dora": True}))
  with pytest.raises(ValueError, match=r"adapter_config.json: use_dora=True is not supported"):
    peft_format.load(str(directory), CONFIG)
  (directory / peft_format.CONFIG_FILE).write_text(json.dumps({"peft_type": "IA3", "r": 4}))
  with pytest.raises(ValueError, match=r"peft_type 'IA3'"):
    peft_format.load(str(directory), CONFIG)
  (directory / peft_format.CONFIG_FILE).write_text("{\n  \"r\": 4,\n oops}")
  with pytest.raises(ValueError, match=r"adapter_config.json:3: invalid JSON"):
    peft_format.load(str(directory), CONFIG)
  # Tensors of the wrong shape are listed by name.
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  (directory / peft_format.CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                               "target_modules": ["q"]}))
  name = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"
  save_file({name: np.zeros((4, 99), np.float32)}, str(directory / peft_format.WEIGHTS_FILE))
  with pytest.raises(ValueError, match=r"mismatched \(1\): .*q.lora_A.weight: \(4, 99\) \(expected \(4, 16\)\)"):
    peft_format.load(str(directory), CONFIG)

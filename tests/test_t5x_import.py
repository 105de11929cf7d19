"""Importing T5X checkpoints: a classic-layout checkpoint written here with TensorStore as T5X writes
it (msgpack + per-parameter zarr arrays, inline optimizer slots), and an orbax-layout one."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization

from flan_t5x import checkpoint_import, hf_format, network, t5x_format

CONFIG = network.T5Config(vocab_size=64, emb_dim=16, num_heads=2, num_encoder_layers=2,
                          num_decoder_layers=2, head_dim=8, mlp_dim=24, dropout_rate=0.0,
                          dtype="float32")


def random_params(seed=0, config=CONFIG):
  """Standard-normal parameters with every tensor the configuration has (numpy, T5X names)."""
  rng = np.random.default_rng(seed)
  params = {}
  for _, path, _ in hf_format.name_map(config):
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = rng.standard_normal(hf_format.expected_shape(path, config)).astype(np.float32)
  return params


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _unflatten(items):
  tree = {}
  for path, value in items:
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def write_classic_t5x_checkpoint(step_dir, params, dtype="float32", step=1000):
  """As t5x.checkpoints.Checkpointer (version 3): target params in zarr, small state inline."""
  os.makedirs(step_dir)
  target_specs, param_states = [], []
  for path, value in _flatten(params):
    name = ".".join(("target",) + path)
    spec = {"driver": "zarr", "dtype": dtype, "kvstore": {"driver": "file", "path": name},
            "metadata": {"chunks": list(value.shape), "compressor": {"id": "gzip"},
                         "shape": list(value.shape)}}
    absolute = dict(spec, kvstore={"driver": "file", "path": os.path.join(step_dir, name)})
    store = ts.open(absolute, create=True, delete_existing=True).result()
    store.write(value.astype(store.dtype.numpy_dtype)).result()
    target_specs.append((path, spec))
    factored = value.ndim == 2
    param_states.append((path, {
        "v_row": np.ones(value.shape[0] if factored else 1, np.float32),
        "v_col": np.ones(value.shape[1] if factored else 1, np.float32),
        "v": np.ones(1 if factored else value.shape, np.float32), "m": np.zeros(1, np.float32)}))
  state = {"version": 3, "optimizer": {
      "target": _unflatten(target_specs),
      "state": {"step": np.int32(step), "param_states": _unflatten(param_states)}}}
  with open(os.path.join(step_dir, "checkpoint"), "wb") as f:
    f.write(serialization.msgpack_serialize(state))


def _assert_same(a, b, **kw):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_classic_t5x_checkpoint_imports(tmp_path):
  params = random_params()
  write_classic_t5x_checkpoint(str(tmp_path / "model" / "checkpoint_1000"), params)
  for path in (tmp_path / "model", tmp_path / "model" / "checkpoint_1000",
               tmp_path / "model" / "checkpoint_1000" / "checkpoint"):
    assert checkpoint_import.detect_format(str(path)) == "t5x_classic"
  loaded, step, fmt = checkpoint_import.load_params_and_step(str(tmp_path / "model"), CONFIG)
  assert (step, fmt) == (1000, "t5x_classic")
  _assert_same(loaded, params, rtol=0, atol=0)


def test_classic_t5x_bfloat16_and_dtype_option(tmp_path):
  params = random_params(1)
  write_classic_t5x_checkpoint(str(tmp_path / "checkpoint_7"), params, dtype="bfloat16", step=7)
  loaded, step = t5x_format.load_classic(str(tmp_path / "checkpoint_7"), dtype=np.float32)
  assert step == 7 and loaded["token_embedder"]["embedding"].dtype == np.float32
  _assert_same(loaded, params, rtol=1e-2, atol=1e-2)
  as_bf16, _ = t5x_format.load_classic(str(tmp_path / "checkpoint_7"), dtype=None)
  assert str(as_bf16["token_embedder"]["embedding"].dtype) == "bfloat16"


def test_classic_checkpoint_of_another_model_is_a_clear_error(tmp_path):
  params = random_params()
  params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"] = np.zeros((25, 16), np.float32)
  del params["decoder"]["decoder_norm"]
  write_classic_t5x_checkpoint(str(tmp_path / "checkpoint_1"), params)
  with pytest.raises(ValueError) as err:
    checkpoint_import.load_params(str(tmp_path / "checkpoint_1"), CONFIG)
  assert "missing (1): decoder/decoder_norm/scale" in str(err.value)
  assert "encoder/layers_0/mlp/wo/kernel: (25, 16) (model expects (24, 16))" in str(err.value)


def test_orbax_layout_t5x_checkpoint_imports(tmp_path):
  params = random_params(2)
  state_dir = tmp_path / "checkpoint_20" / "state"
  with ocp.PyTreeCheckpointer() as checkpointer:
    checkpointer.save(str(state_dir), args=ocp.args.PyTreeSave(
        {"target": params, "state": {"step": np.int32(20)}}))
  assert checkpoint_import.detect_format(str(tmp_path)) == "t5x_orbax"
  loaded, step, _ = checkpoint_import.load_params_and_step(str(tmp_path), CONFIG)
  assert step == 20
  _assert_same(loaded, params, rtol=0, atol=0)


def test_unknown_path_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint found"):
    checkpoint_import.detect_format(str(tmp_path))

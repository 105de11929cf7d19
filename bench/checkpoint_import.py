"""Time to import a flan_t5_small-shaped checkpoint (random weights, ~77M parameters).

  python bench/checkpoint_import.py [--out bench/results/checkpoint_import.json]

Writes a Hugging Face directory (safetensors) and a classic T5X checkpoint (msgpack + TensorStore)
of the flan_t5_small shapes, then times flan-t5x importing each into numpy parameters, and, as the
peer in the same run, `transformers.T5ForConditionalGeneration.from_pretrained` on the same HF
directory (when torch/transformers are installed; in a child process, flan_t5x.hf_peer, with the
torch/transformers import itself excluded from the time). Target: flan-t5x import < 10 s. Writes JSON.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

import hardware
import bench_results  # bench/ is on sys.path when run as a script

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

FLAN_T5_SMALL = dict(vocab_size=32128, emb_dim=512, num_heads=6, num_encoder_layers=8,
                     num_decoder_layers=8, head_dim=64, mlp_dim=1024, dropout_rate=0.0,
                     dtype="float32")


def _timed(fn):
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=str(ROOT / "bench/results/checkpoint_import.json"))
  args = parser.parse_args(argv)
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  from flan_t5x import checkpoint_import, hf_format, hf_peer_client, network  # pylint: disable=g-import-not-at-top
  from test_t5x_import import random_params, write_classic_t5x_checkpoint  # pylint: disable=g-import-not-at-top
  config = network.T5Config(**FLAN_T5_SMALL)
  params = random_params(0, config)
  count = sum(x.size for x in checkpoint_import.leaves(params))
  result = {"benchmark": "checkpoint_import", "parameters": int(count), "cpus": os.cpu_count()}
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir, t5x_dir = os.path.join(tmp, "hf"), os.path.join(tmp, "t5x", "checkpoint_1")
    hf_format.save(params, config, hf_dir)
    write_classic_t5x_checkpoint(t5x_dir, params)
    loaded, result["hf_import_s"] = _timed(lambda: checkpoint_import.load_params(hf_dir, config))
    assert np.array_equal(loaded["decoder"]["logits_dense"]["kernel"],
                          params["decoder"]["logits_dense"]["kernel"])
    _, result["t5x_classic_import_s"] = _timed(lambda: checkpoint_import.load_params(t5x_dir, config))
    try:
      # In the torch child (torch next to JAX/TensorFlow segfaults); its torch import is timed apart.
      peer, _ = hf_peer_client.call("from-pretrained-timing", {"model_dir": hf_dir}, timeout=None)
      result["transformers_from_pretrained_s"] = peer["seconds"]
      result["transformers_import_s"] = peer["import_s"]
      result["ratio_peer_over_ours"] = result["transformers_from_pretrained_s"] / result["hf_import_s"]
    except hf_peer_client.HFPeerUnavailable:
      result["transformers_from_pretrained_s"] = None
  print(f"flan_t5_small shapes, {count / 1e6:.1f}M parameters: HF import {result['hf_import_s']:.2f} s, "
        f"classic T5X import {result['t5x_classic_import_s']:.2f} s (target < 10 s)")
  if result.get("transformers_from_pretrained_s") is None:
    print("transformers peer not installed (pip install -e .[bench])")
  else:
    ratio = result["ratio_peer_over_ours"]
    print(f"transformers from_pretrained {result['transformers_from_pretrained_s']:.2f} s: peer/ours "
          f"{ratio:.2f} ({'ours' if ratio > 1 else 'the peer'} is faster)")
  print(f"wrote {bench_results.write_json('checkpoint_import', result, args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

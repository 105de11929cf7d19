"""The Flan Collection part of bench/data_pipeline.py (run through it: `--part collection`).

On a generated collection in the real dump layout (`<submix>_submix_original/data/*.parquet`,
1M rows by default) it measures, each in a child process pinned to one CPU core:

- ours: the `flan2022` mixture as the engine reads it (flan_t5x.data.get_dataset: lazy shard
  reading, Flan 2022 rates and caps, T5 SentencePiece tokenization, packing to 2048/512 with
  seqio.EncDecFeatureConverter): non-padding tokens per second;
- the peer, in the same run: the same pipeline over the same kind of rows served from memory
  (a SeqIO task over in-memory tensors with the mixture's preprocessing), i.e. tokenize + pack
  alone;
- peak RSS while streaming from a 100k-row and the 1M-row collection (flat memory).

Cores per accelerator = 48.5k tokens/s (NVIDIA's T5X T5-Large figure: 75.8 sequences/s per A100 at
512+128 tokens) / our tokens/s on one core.
"""
import functools
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import bench_results  # bench/ is on sys.path when run as a script

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPIECE = ROOT.parent / "shared/checkpoints/t5-spiece/spiece.model"
A100_T5_LARGE_TOKENS_PER_S = 75.8 * (512 + 128)  # = 48,512
LENGTHS = {"inputs": 2048, "targets": 512}
BATCH = 8
RSS_EXAMPLES = 15_000  # streamed in each memory child (covers many chunks of every stream)
WORDS = 60  # ~80 T5 tokens of input per row (rough order of Flan zero-shot prompts)


def _ensure_collection(path: str, rows: int) -> str:
  marker = os.path.join(path, "COMPLETE")
  if not os.path.exists(marker):
    from flan_tasks import synthetic_collection  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    # Row groups of one chunk (1,024 rows) in both collections, so the reader's bound on memory
    # (a few row groups per stream) is the same and any growth would come from the collection.
    synthetic_collection.write_collection(path, 300, rows, files_per_folder=8, words=WORDS,
                                          row_group_rows=1024)
    with open(marker, "w") as f:
      f.write(str(rows))
    print(f"generated {rows:,} rows under {path} in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
  return path


def _configure_vocab():
  import flan_tasks  # pylint: disable=g-import-not-at-top
  if SPIECE.is_file():
    flan_tasks.configure(vocab_path=str(SPIECE))
    return str(SPIECE)
  raise SystemExit(f"{SPIECE} not found: the collection bench tokenizes with the T5 vocabulary")


def _packed_tokens_per_s(mixture: str, examples: int) -> dict:
  import seqio  # pylint: disable=g-import-not-at-top
  from flan_t5x import data  # pylint: disable=g-import-not-at-top
  config = data.DatasetConfig(mixture, LENGTHS, "train", batch_size=BATCH, shuffle=True, seed=0,
                              pack=True)
  start = time.perf_counter()
  ds = data.get_dataset(config, seqio.EncDecFeatureConverter(pack=True), seed=0, num_epochs=None)
  iterator = data.InputIterator(ds)
  for _ in range(4):  # warm-up: graphs, first chunks, shuffle buffers
    next(iterator)
  warm = time.perf_counter()
  tokens = rows = batches = 0
  while rows < examples:
    batch = next(iterator)
    tokens += int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())
    rows += int(batch["encoder_segment_ids"].max(axis=1).sum())
    batches += 1
  elapsed = time.perf_counter() - warm
  return {"tokens_per_s": tokens / elapsed, "examples_per_s": rows / elapsed,
          "tokens_per_example": tokens / rows, "packed_sequences": batches * BATCH,
          "startup_s": warm - start, "measured_s": elapsed}


def measure_child(collection_dir: str, examples: int) -> dict:
  """Ours and the in-memory peer, in this (pinned) process."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import flan_tasks  # pylint: disable=g-import-not-at-top
  from flan_tasks import registry  # pylint: disable=g-import-not-at-top
  _configure_vocab()
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as cache_dir:  # index from scratch: part of the cost
    flan_tasks.add_flan_collection(collection_dir, "bench_flan2022", cache_dir=cache_dir)
  register_s = time.perf_counter() - start
  ours = _packed_tokens_per_s("bench_flan2022", examples)
  # The peer: rows of the same collection, already in memory.
  first = sorted(pathlib.Path(collection_dir).glob("t0_submix_original/data/*.parquet"))[0]
  table = pq.read_table(first, columns=["inputs", "targets"]).slice(0, 20_000)
  columns = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in ("inputs", "targets")}
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(columns).repeat(),
      splits=("train",))
  # The preprocessing the collection's mixture runs: tokenize (no pretokenized copies, which a
  # mixture does not return), EOS, the tasks' shuffle buffer.
  seqio.TaskRegistry.add(
      "bench_in_memory_peer", source=source,
      preprocessors=[functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=registry.output_features(flan_tasks.t5_vocabulary()),
      shuffle_buffer_size=registry.TASK_SHUFFLE_BUFFER)
  peer = _packed_tokens_per_s("bench_in_memory_peer", examples)
  return {"ours": ours, "in_memory_peer": peer, "register_s": register_s}


def rss_child(collection_dir: str, examples: int) -> dict:
  """Peak RSS after streaming `examples` tokenized examples of the mixture."""
  import seqio  # pylint: disable=g-import-not-at-top
  import flan_tasks  # pylint: disable=g-import-not-at-top
  _configure_vocab()
  flan_tasks.add_flan_collection(collection_dir, "bench_rss")
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  ds = seqio.get_mixture_or_task("bench_rss").get_dataset(
      LENGTHS, split="train", shuffle=True, seed=0, num_epochs=None, try_in_mem_cache=False)
  n = 0
  for _ in ds.take(examples).as_numpy_iterator():
    n += 1
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"examples": n, "peak_rss_mb": peak, "rss_before_streaming_mb": before}


def _child(mode: str, collection_dir: str, examples: int, core: int) -> dict:
  env = dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
             TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, __file__, mode, collection_dir, str(examples)], env=env,
      capture_output=True, text=True, check=False,
      preexec_fn=lambda: os.sched_setaffinity(0, {core}))
  if result.returncode != 0:
    raise RuntimeError(f"{mode} child failed:\n{result.stderr[-4000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def _text_mb(path: str) -> float:
  """Size of the collection's files: what a reader that loads everything would hold (at least)."""
  return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*.parquet")) / 2**20


def main(args) -> dict:
  base = args.collection_dir or "/tmp/flan_collection_bench_v2"
  big = _ensure_collection(os.path.join(base, f"rows_{args.collection_rows}"), args.collection_rows)
  small_rows = max(args.collection_rows // 10, 10_000)
  small = _ensure_collection(os.path.join(base, f"rows_{small_rows}"), small_rows)
  core = sorted(os.sched_getaffinity(0))[-1]
  measured = _child("measure", big, args.collection_examples, core)
  rss_small = _child("rss", small, RSS_EXAMPLES, core)
  rss_big = _child("rss", big, RSS_EXAMPLES, core)
  ours, peer = measured["ours"], measured["in_memory_peer"]
  result = {
      "benchmark": "data_pipeline_collection", "collection_rows": args.collection_rows,
      "collection_layout": "submix_original (Parquet)", "sequence_length": LENGTHS,
      "packed_batch": BATCH, "vocabulary": str(SPIECE), "cores_used": 1,
      "ours_read_tokenize_pack": ours, "in_memory_peer_tokenize_pack": peer,
      "ratio_ours_over_in_memory_peer": ours["tokens_per_s"] / peer["tokens_per_s"],
      "register_and_index_s": measured["register_s"],
      "consumption_tokens_per_s_per_accelerator": A100_T5_LARGE_TOKENS_PER_S,
      "cores_per_accelerator": A100_T5_LARGE_TOKENS_PER_S / ours["tokens_per_s"],
      "target_cores_per_accelerator": 1.0,
      "peak_rss_mb": {f"{small_rows}_rows": rss_small["peak_rss_mb"],
                      f"{args.collection_rows}_rows": rss_big["peak_rss_mb"]},
      "rss_examples_streamed": RSS_EXAMPLES,
      "collection_text_mb": {f"{small_rows}_rows": _text_mb(small),
                             f"{args.collection_rows}_rows": _text_mb(big)},
      "cpus": os.cpu_count(), "python": platform.python_version(),
      "note": "one core pinned (sched_setaffinity) on a 2-core host shared with other engineers' "
              "jobs: numbers are a lower bound for a dedicated core",
  }
  print(f"Flan Collection ({args.collection_rows:,} rows): read + tokenize + pack at 2048/512 on one "
        f"core: {ours['tokens_per_s']:,.0f} tokens/s ({ours['examples_per_s']:,.0f} examples/s)\n"
        f"  in-memory peer (tokenize + pack only): {peer['tokens_per_s']:,.0f} tokens/s: ratio "
        f"ours/peer {result['ratio_ours_over_in_memory_peer']:.2f}\n"
        f"  cores per accelerator at 48.5k tokens/s (T5-Large, A100): "
        f"{result['cores_per_accelerator']:.2f} (target <= 1)\n"
        f"  peak RSS streaming: {rss_small['peak_rss_mb']:.0f} MB ({small_rows:,} rows) vs "
        f"{rss_big['peak_rss_mb']:.0f} MB ({args.collection_rows:,} rows; Parquet files "
        f"{_text_mb(small):.0f} MB vs {_text_mb(big):.0f} MB)\n"
        f"  registering (indexing {args.collection_rows:,} rows from scratch): "
        f"{measured['register_s']:.1f} s")
  print(f"wrote {bench_results.write_json('data_pipeline_collection', result)}")
  return result


if __name__ == "__main__":
  mode, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
  sys.path.insert(0, str(ROOT))
  output = (measure_child if mode == "measure" else rss_child)(directory, count)
  print(json.dumps(output), flush=True)
  # Skip interpreter teardown: tf.data threads still inside the reader's py_function can abort it.
  os._exit(0)

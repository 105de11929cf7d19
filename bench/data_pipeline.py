"""Throughput of the flan_tasks input pipeline: formatted + tokenized examples per second on CPU.

  python bench/data_pipeline.py [--mixture flan_mix] [--examples 2000] [--out bench/results/...]
  python bench/data_pipeline.py --part collection [--collection_rows 1000000]

`--part collection` (also in `--part all`) measures the Flan Collection's pipeline
(flan_tasks.flan_collection on a generated 1M-row collection in the real layout): tokens/s on one
CPU core for read + tokenize + pack at 2048/512, against the same examples served from memory, and
what that means in host cores per accelerator (see bench_collection).

Measures the real SeqIO pipeline of a mixture (reading, template formatting, few-shot assembly,
tokenization, mixing) and two peers in the same run: the same sources and rates as bare SeqIO tasks
(fields copied to inputs/targets, no templates: what instruction formatting costs), and a
plain-Python loop (str.format with a drawn template + encode per example, no tf.data).
Uses ../shared/datasets and the 32k T5 vocabulary when present, else the built-in demo mixture.
Writes JSON.
"""
import argparse
import os
import pathlib
import platform
import random
import sys
import time

import hardware
import bench_results  # bench/ is on sys.path when run as a script

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _configure(mixture: str) -> str:
  import flan_tasks  # pylint: disable=g-import-not-at-top
  datasets, spiece = SHARED / "datasets", SHARED / "checkpoints/t5-spiece/spiece.model"
  if mixture.startswith("flan") and datasets.is_dir() and spiece.is_file():
    flan_tasks.configure(data_dir=str(datasets), vocab_path=str(spiece))
    return mixture
  if mixture.startswith("flan"):
    print(f"../shared not found: benchmarking demo_mix instead of {mixture}", file=sys.stderr)
    return "demo_mix"
  return mixture


def bench_seqio(mixture: str, examples: int, lengths) -> dict:
  import seqio  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture)
  start = time.perf_counter()
  ds = provider.get_dataset(lengths, split="train", shuffle=True, seed=0, num_epochs=None)
  iterator = ds.as_numpy_iterator()
  # Warm-up: reading the files, building the graphs and filling every task's shuffle buffer.
  for _ in range(200):
    next(iterator)
  warm = time.perf_counter()
  tokens = 0
  for _ in range(examples):
    ex = next(iterator)
    tokens += len(ex["inputs"]) + len(ex["targets"])
  end = time.perf_counter()
  return {"examples_per_s": examples / (end - warm), "tokens_per_s": tokens / (end - warm),
          "startup_s": warm - start}


def bench_plain_python(mixture: str, examples: int) -> dict:
  """The peer: the same rows, one Python str.format and one encode per example, no tf.data."""
  import seqio  # pylint: disable=g-import-not-at-top
  import flan_tasks  # pylint: disable=g-import-not-at-top
  from flan_tasks import formatting, mixtures  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture)
  vocabulary = provider.output_features["inputs"].vocabulary
  rows, row_templates = [], []
  for task in provider.tasks:
    if not mixtures.task_available(task, "train"):
      continue
    info = flan_tasks.task_info(task.name)
    columns = task.source.load_columns("train")
    extra = dict(info.constant_fields)
    if info.options:
      extra[formatting.OPTIONS_FIELD] = formatting.options_text(info.options)
    for i in range(min(len(columns[task.source.fields[0]]), examples)):
      rows.append({**{f: columns[f][i] for f in columns}, **extra})
      row_templates.append(info.templates)
  rng = random.Random(0)
  order = [rng.randrange(len(rows)) for _ in range(examples)]
  start = time.perf_counter()
  for i in order:
    inputs_template, targets_template = rng.choice(row_templates[i])
    vocabulary.encode(inputs_template.format(**rows[i]))
    vocabulary.encode(targets_template.format(**rows[i]))
  elapsed = time.perf_counter() - start
  return {"examples_per_s": examples / elapsed}


def bench_bare_seqio(mixture: str, examples: int, lengths) -> dict:
  """The SeqIO peer: the same sources and rates, fields copied to inputs/targets, no templates."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from flan_tasks import mixtures  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture)
  members = []
  for task in provider.tasks:
    if not mixtures.task_available(task, "train"):
      continue
    input_field, target_field = task.source.fields[:2]
    name = f"bench_bare_{task.name}"
    if name not in seqio.TaskRegistry.names():
      rekey = lambda ds, i=input_field, t=target_field: ds.map(
          lambda ex: {"inputs": ex[i], "targets": ex[t]}, num_parallel_calls=tf.data.AUTOTUNE)
      seqio.TaskRegistry.add(name, source=task.source, output_features=task.output_features,
                             preprocessors=[rekey, seqio.preprocessors.tokenize,
                                            seqio.preprocessors.append_eos_after_trim])
    members.append((name, provider.get_rate(task)))
  seqio.MixtureRegistry.add(f"bench_bare_{mixture}", members)
  return bench_seqio(f"bench_bare_{mixture}", examples, lengths)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--mixture", default="flan_mix")
  parser.add_argument("--examples", type=int, default=2000)
  parser.add_argument("--inputs_length", type=int, default=2048)
  parser.add_argument("--targets_length", type=int, default=512)
  parser.add_argument("--out", default=str(ROOT / "bench/results/data_pipeline.json"))
  parser.add_argument("--part", default="all", choices=("all", "builtin", "collection"))
  parser.add_argument("--collection_rows", type=int, default=1_000_000)
  parser.add_argument("--collection_dir", default=None,
                      help="generated collection to reuse (written there when missing)")
  parser.add_argument("--collection_examples", type=int, default=6000,
                      help="examples measured per pipeline after warm-up")
  args = parser.parse_args(argv)
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  if args.part in ("all", "collection"):
    import collection_pipeline  # pylint: disable=g-import-not-at-top
    collection_pipeline.main(args)
  if args.part == "collection":
    return 0
  mixture = _configure(args.mixture)
  lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
  ours = bench_seqio(mixture, args.examples, lengths)
  seqio_peer = bench_bare_seqio(mixture, args.examples, lengths)
  peer = bench_plain_python(mixture, args.examples)
  result = {
      "benchmark": "data_pipeline", "mixture": mixture, "examples": args.examples,
      "sequence_length": lengths, "flan_tasks": ours, "bare_seqio_peer": seqio_peer,
      "plain_python_zero_shot_peer": peer,
      "ratio_ours_over_bare_seqio": ours["examples_per_s"] / seqio_peer["examples_per_s"],
      "ratio_ours_over_peer": ours["examples_per_s"] / peer["examples_per_s"],
      "cpus": os.cpu_count(), "python": platform.python_version(),
      "note": "ours includes few-shot assembly (zs and fs tasks) and mixing; the peer formats "
              "zero-shot only",
  }
  print(f"{mixture}: flan_tasks {ours['examples_per_s']:.0f} ex/s ({ours['tokens_per_s']:.0f} tok/s, "
        f"startup {ours['startup_s']:.1f} s)\n  bare SeqIO peer (same sources and rates, no templates) "
        f"{seqio_peer['examples_per_s']:.0f} ex/s: ratio ours/peer "
        f"{result['ratio_ours_over_bare_seqio']:.2f}\n  plain-Python zero-shot peer (no tf.data) "
        f"{peer['examples_per_s']:.0f} ex/s: ratio ours/peer {result['ratio_ours_over_peer']:.2f}")
  print(f"wrote {bench_results.write_json('data_pipeline', result, args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Look at a task or mixture: formatted examples, template usage, token lengths, mixture rates.

  python -m flan_tasks.inspect NAME [--split train] [--n 3] [--sample 200] [--show-tokens]
  python -m flan_tasks.inspect flan2022 --collection_dir DIR   # the Flan Collection's mixture

The functions are importable for a notebook: `summarize(name)`, `format_report(summary)`.
"""
import argparse
import collections
import dataclasses
import difflib
import sys
from typing import Dict, List, Optional

import numpy as np
import seqio

import flan_tasks  # registers the tasks  # pylint: disable=unused-import
from flan_tasks import config, flan_collection, mixtures

DEFAULT_LENGTHS = {"inputs": 2048, "targets": 512}


@dataclasses.dataclass
class Summary:
  name: str
  split: str
  examples: List[Dict[str, object]]
  template_counts: Dict[str, collections.Counter]
  length_percentiles: Dict[str, Dict[int, float]]
  truncated: Dict[str, int]
  sampled: int
  rates: Optional[Dict[str, float]] = None
  unavailable: List[str] = dataclasses.field(default_factory=list)
  style_counts: Dict[str, int] = dataclasses.field(default_factory=dict)


def _decode(value):
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [_decode(v) for v in value]
  return value.tolist() if isinstance(value, np.ndarray) else value


def summarize(name: str, split: str = "train", n: int = 3, sample: int = 200,
              sequence_length: Optional[Dict[str, int]] = None, seed: int = 0) -> Summary:
  """Reads `sample` examples of a task or mixture through the real SeqIO pipeline."""
  provider = seqio.get_mixture_or_task(name)
  lengths = dict(sequence_length or DEFAULT_LENGTHS)
  extra = {}
  if isinstance(provider, seqio.Mixture):
    extra["passthrough_features"] = list(flan_tasks.METADATA_FEATURES) + [
        f"{f}_pretokenized" for f in lengths]
  ds = provider.get_dataset(lengths, split=split, shuffle=True, seed=seed, num_epochs=1, **extra)
  examples, token_lengths = [], collections.defaultdict(list)
  templates = collections.defaultdict(collections.Counter)
  styles = collections.Counter()
  for example in ds.take(sample).as_numpy_iterator():
    if len(examples) < n:
      examples.append({k: _decode(v) for k, v in example.items()})
    for feature in lengths:
      # The pipeline trims to the given lengths; re-encode the text to see the untrimmed length.
      vocabulary = provider.output_features[feature].vocabulary
      text = _decode(example[f"{feature}_pretokenized"])
      token_lengths[feature].append(len(vocabulary.encode(text)) + 1)
    task = _decode(example.get("_task_name", name.encode()))
    templates[task][int(example.get("_template_idx", -1))] += 1
    styles[_decode(example.get("_template_type", b"?"))] += 1
  percentiles = {f: {p: float(np.percentile(v, p)) for p in (50, 90, 95, 99, 100)}
                 for f, v in token_lengths.items()}
  truncated = {f: int(sum(x > lengths[f] for x in token_lengths[f])) for f in lengths}
  rates, unavailable = None, []
  if isinstance(provider, seqio.Mixture):
    rates = mixtures.mixture_rates(name, split)
    listed = getattr(provider, "listed_tasks", provider.tasks)  # flan mixtures: with those left out
    unavailable = sorted(t.name for t in listed if not mixtures.task_available(t, split))
  return Summary(name, split, examples, dict(templates), percentiles, truncated,
                 len(token_lengths["targets"]), rates, unavailable, dict(styles))


def _collection_sample_lines(summary: Summary) -> List[str]:
  """Sampled examples per submix and template type (a collection mixture has ~1,800 tasks)."""
  info = flan_collection.registered(summary.name)
  submix_of = {task: submix for submix, task, _ in info.counts}
  by_submix, by_style = collections.Counter(), collections.Counter()
  for task, counts in summary.template_counts.items():
    by_submix[submix_of.get(task, "?")] += sum(counts.values())
  for style, count in summary.style_counts.items():
    by_style[style] += count
  total = max(summary.sampled, 1)
  out = ["\n-- sampled examples per submix"]
  out += [f"{m:10s} {n:6d} {100 * n / total:6.2f}%" for m, n in sorted(by_submix.items())]
  out.append("-- sampled examples per template type")
  out += [f"{s:10s} {n:6d} {100 * n / total:6.2f}%" for s, n in sorted(by_style.items())]
  return out


def format_report(summary: Summary, show_tokens: bool = False,
                  sequence_length: Optional[Dict[str, int]] = None) -> str:
  lengths = dict(sequence_length or DEFAULT_LENGTHS)
  out = [f"== {summary.name} ({summary.split}) — {summary.sampled} examples sampled"]
  collection = flan_collection.registered(summary.name)
  if collection:
    out.append(flan_collection.describe(summary.name))
    out += _collection_sample_lines(summary)
  if summary.rates:
    total = sum(summary.rates.values())
    out.append("\n-- mixture rates")
    out.append(f"{'task':40s} {'rate':>10s} {'share':>8s}")
    for task, rate in sorted(summary.rates.items(), key=lambda kv: -kv[1]):
      out.append(f"{task:40s} {rate:10.1f} {100 * rate / total:7.2f}%")
  if summary.unavailable:
    out.append(f"left out, data not available here: {', '.join(summary.unavailable)}")
  for i, example in enumerate(summary.examples):
    out.append(f"\n-- example {i} [{example.get('_task_name', summary.name)}, template "
               f"{example.get('_template_idx', '?')} ({example.get('_template_type', '?')}), "
               f"shots {example.get('_num_shots', 0)}]")
    out.append("INPUTS:\n" + str(example.get("inputs_pretokenized", "")))
    out.append("TARGETS:\n" + str(example.get("targets_pretokenized", "")))
    if show_tokens:
      out.append(f"input ids ({len(example['inputs'])}): {example['inputs']}")
      out.append(f"target ids ({len(example['targets'])}): {example['targets']}")
  if not collection:
    out.append("\n-- template usage (task: {template index: count})")
    for task, counts in sorted(summary.template_counts.items()):
      out.append(f"{task}: {dict(sorted(counts.items()))}")
  out.append("\n-- token lengths before trimming (with EOS; few-shot prompts already fit the "
             "inputs budget)")
  for feature, pct in summary.length_percentiles.items():
    cells = "  ".join(f"p{p}={v:.0f}" for p, v in pct.items())
    out.append(f"{feature:8s} {cells}   longer than {lengths[feature]}: "
               f"{summary.truncated[feature]}/{summary.sampled}")
  return "\n".join(out)


def unknown_name_message(name: str, known) -> str:
  """'No task or mixture ...', with the registered names it most likely means."""
  prefixed = sorted(k for k in known if k.startswith(name + "_"))
  close = [k for k in difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6) if k not in prefixed]
  guesses = (prefixed + close)[:6]
  hint = f" Did you mean {', '.join(guesses)}?" if guesses else ""
  return (f"No task or mixture named {name!r}.{hint} {len(known)} are registered "
          "(flan tasks are <dataset>_zs and <dataset>_fs; mixtures flan_mix, flan_heldout, demo_mix, ...).")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m flan_tasks.inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="a task or mixture name, e.g. flan_mix or dialogsum_zs")
  parser.add_argument("--split", default="train")
  parser.add_argument("--n", type=int, default=3, help="formatted examples to print")
  parser.add_argument("--sample", type=int, default=200, help="examples read for the statistics")
  parser.add_argument("--inputs_length", type=int, default=DEFAULT_LENGTHS["inputs"])
  parser.add_argument("--targets_length", type=int, default=DEFAULT_LENGTHS["targets"])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--show-tokens", action="store_true", dest="show_tokens")
  parser.add_argument("--collection_dir", default=None,
                      help="Flan Collection shards (default $FLAN_COLLECTION_DIR): registers NAME "
                           "(e.g. flan2022) as the Flan 2022 mixture of them")
  args = parser.parse_args(argv)
  lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
  try:
    collection_dir = args.collection_dir or config.collection_dir()
    known = set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names())
    if collection_dir and args.name not in known:
      flan_collection.add_flan_collection(collection_dir, name=args.name)
    elif args.name not in known:
      raise ValueError(unknown_name_message(args.name, known))
    summary = summarize(args.name, args.split, args.n, args.sample, lengths, args.seed)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_report(summary, args.show_tokens, lengths))
  return 0


if __name__ == "__main__":
  sys.exit(main())

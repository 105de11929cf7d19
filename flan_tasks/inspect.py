"""Look at a task or mixture: formatted examples, template usage, token lengths, mixture rates,
unknown tokens and the characters the vocabulary cannot encode.

    python -m flan_tasks.inspect NAME [--split train] [--n 3] [--sample 200] [--show-tokens]
    python -m flan_tasks.inspect flan2022 --collection_dir DIR   # the Flan Collection's mixture
    python -m flan_tasks.inspect --file chats.jsonl --input_field chat --target_field summary \
        --family dialogue_summarization                          # a file of your own, as a task

The functions are importable for a notebook: `summarize(name)` returns a Summary, which renders as
HTML in Jupyter and has pandas views (`flan_tasks.inspect_views`); `format_report(summary)` is the
text the command prints.
"""
import argparse
import collections
import dataclasses
import os
import re
import difflib
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import seqio

import flan_tasks  # registers the tasks  # pylint: disable=unused-import
from flan_tasks import config, flan_collection, inspect_views, mixtures, registry, vocab as vocab_lib

DEFAULT_LENGTHS = {"inputs": 2048, "targets": 512}


@dataclasses.dataclass
class VocabularyCheck:
  """One task's text against its vocabulary: <unk> tokens and the characters that do not survive."""
  tokens: Dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
  unknown: Dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
  # character -> occurrences in the sampled text, for characters encode-then-decode changes
  unencodable: Dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())

  def unknown_rate(self, feature: str) -> float:
    return self.unknown[feature] / max(self.tokens[feature], 1)


@dataclasses.dataclass
class Summary:
  """What `summarize` read. Renders as HTML in a notebook; `inspect_views` has the pandas views."""
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
  # The feature lengths the truncation counts are against.
  sequence_length: Dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LENGTHS))
  token_lengths: Dict[str, List[int]] = dataclasses.field(default_factory=dict)  # untrimmed, per example
  vocabulary: Dict[str, VocabularyCheck] = dataclasses.field(default_factory=dict)  # per task

  def _repr_html_(self) -> str:
    return inspect_views.summary_html(self)


def token_pieces(vocabulary: seqio.Vocabulary, ids: Sequence[int]) -> List[str]:
  """Each id as the vocabulary's piece: SentencePiece pieces (with ▁), bytes as characters."""
  ids = [int(i) for i in ids]
  tokenizer = getattr(vocabulary, "tokenizer", None) if isinstance(
      vocabulary, seqio.SentencePieceVocabulary) else None
  if tokenizer is not None:
    size = tokenizer.get_piece_size()
    return [tokenizer.id_to_piece(i) if i < size else f"<extra_id_{vocabulary.vocab_size - 1 - i}>"
            for i in ids]
  special = {0: "<pad>", 1: "</s>", 2: "<unk>"}
  return [special.get(i) or vocabulary.decode([i]) or f"<{i}>" for i in ids]


def _survives(vocabulary: seqio.Vocabulary, char: str) -> bool:
  text = f"a{char}a"  # inside a word: SentencePiece treats a leading character differently
  return vocabulary.decode(vocabulary.encode(text)) == text


def check_text(check: VocabularyCheck, vocabulary: seqio.Vocabulary, feature: str, text: str,
               ids: Sequence[int], survives: Optional[Dict[str, bool]] = None) -> None:
  """Adds one text's token and <unk> counts and its characters the vocabulary cannot encode.

  `survives` caches per character whether it round-trips; share it only between texts of one
  vocabulary (flan_tasks' T5 vocabulary follows `configure`, so not across calls that change it).
  """
  survives = {} if survives is None else survives
  check.tokens[feature] += len(ids)
  unk_id = getattr(vocabulary, "unk_id", None)
  check.unknown[feature] += sum(int(i) == unk_id for i in ids) if unk_id is not None else 0
  for char, count in collections.Counter(text).items():
    if char.isspace():
      continue
    if char not in survives:
      survives[char] = _survives(vocabulary, char)
    if not survives[char]:
      check.unencodable[char] += count


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
  checks = collections.defaultdict(VocabularyCheck)
  survives = {feature: {} for feature in lengths}  # per feature: its vocabulary's round trips
  for example in ds.take(sample).as_numpy_iterator():
    task = _decode(example.get("_task_name", name.encode()))
    decoded = {k: _decode(v) for k, v in example.items()} if len(examples) < n else None
    for feature in lengths:
      # The pipeline trims to the given lengths; re-encode the text to see the untrimmed length.
      vocabulary = provider.output_features[feature].vocabulary
      text = _decode(example[f"{feature}_pretokenized"])
      ids = vocabulary.encode(text)
      token_lengths[feature].append(len(ids) + 1)
      check_text(checks[task], vocabulary, feature, text, ids, survives[feature])
      if decoded is not None:
        decoded[f"{feature}_pieces"] = token_pieces(vocabulary, example[feature])
    if decoded is not None:
      examples.append(decoded)
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
                 len(token_lengths["targets"]), rates, unavailable, dict(styles), lengths,
                 dict(token_lengths), dict(checks))


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


def _char_list(counts: Dict[str, int], limit: int = 12) -> str:
  top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  text = ", ".join(f"{c!r} x{n}" for c, n in top[:limit])
  return text + (f", ... ({len(top) - limit} more)" if len(top) > limit else "")


def _vocabulary_lines(summary: Summary, most: int = 20) -> List[str]:
  """One line per task (at most `most`: a collection mixture samples hundreds of tasks)."""
  out = ["\n-- vocabulary: <unk> tokens in the sampled text, and characters encode-then-decode loses"]
  checks = sorted(summary.vocabulary.items())
  if len(checks) > most:
    total = VocabularyCheck()
    for _, check in checks:
      for counter, part in ((total.tokens, check.tokens), (total.unknown, check.unknown),
                            (total.unencodable, check.unencodable)):
        counter.update(part)
    out.append(f"all {len(checks)} tasks: <unk> " + "  ".join(
        f"{f} {total.unknown[f]}/{total.tokens[f]}" for f in summary.sequence_length))
    out.append(f"the {most} with the most <unk> tokens:")
    checks = sorted(checks, key=lambda kv: -sum(kv[1].unknown.values()))[:most]
  for task, check in checks:
    cells = "  ".join(f"{f} {check.unknown[f]}/{check.tokens[f]} ({100 * check.unknown_rate(f):.2f}%)"
                      for f in summary.sequence_length)
    out.append(f"{task}: <unk> {cells}")
    if check.unencodable:
      out.append(f"  cannot encode: {_char_list(check.unencodable)}")
  return out


def format_report(summary: Summary, show_tokens: bool = False,
                  sequence_length: Optional[Dict[str, int]] = None) -> str:
  """The text report. The truncation counts are against the lengths `summarize` was given."""
  lengths = dict(summary.sequence_length)
  if sequence_length is not None and dict(sequence_length) != lengths:
    raise ValueError(f"sequence_length {dict(sequence_length)} differs from the lengths the summary's "
                     f"truncation counts were made with, {lengths}: pass it to summarize() instead")
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
      for feature, label in (("inputs", "input"), ("targets", "target")):
        out.append(f"{label} ids ({len(example[feature])}): {example[feature]}")
        out.append(f"{label} pieces: {example.get(f'{feature}_pieces')}")
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
  out += _vocabulary_lines(summary)
  return "\n".join(out)


def register_file(path: str, input_field: str, target_field: str, family: str,
                  name: Optional[str] = None, vocabulary: Optional[seqio.Vocabulary] = None) -> str:
  """Registers a JSONL/JSON/CSV/TSV file (as its train split) as a task; returns `<name>_zs`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--file {path}: no such file")
  if family not in registry.FAMILY_DEFAULTS:
    raise ValueError(f"--family {family!r}: expected one of {sorted(registry.FAMILY_DEFAULTS)}")
  name = name or re.sub(r"\W+", "_", os.path.splitext(os.path.basename(path))[0]).strip("_") or "file"
  return flan_tasks.add_instruction_task(name, {"train": path}, input_field, target_field,
                                         family=family, vocabulary=vocabulary)
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
  parser.add_argument("name", nargs="?", help="a task or mixture name, e.g. flan_mix or dialogsum_zs "
                      "(with --file: the task's name, default the file's)")
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
  parser.add_argument("--file", default=None, help="a JSONL/JSON/CSV/TSV file to inspect as a task "
                      "(its train split; needs --input_field, --target_field and --family)")
  parser.add_argument("--input_field", default=None, help="with --file: the column with the input")
  parser.add_argument("--target_field", default=None, help="with --file: the column with the target")
  parser.add_argument("--family", default=None,
                      help=f"with --file: the template family, one of {sorted(registry.FAMILY_DEFAULTS)}")
  parser.add_argument("--vocab_path", default=None, help="SentencePiece model for the T5-vocabulary "
                      "tasks (default $FLAN_VOCAB_PATH, else T5X's Flan-T5 vocabulary)")
  parser.add_argument("--byte_vocabulary", action="store_true",
                      help="with --file: tokenize with the byte vocabulary (no model file needed)")
  args = parser.parse_args(argv)
  lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
  file_args = {"--input_field": args.input_field, "--target_field": args.target_field,
               "--family": args.family}
  if args.file is None and args.name is None:
    parser.error("give a task or mixture NAME, or --file")
  if args.file is not None and None in file_args.values():
    parser.error(f"--file needs {', '.join(k for k, v in file_args.items() if v is None)}")
  if args.file is None and (args.byte_vocabulary or any(file_args.values())):
    parser.error("--input_field, --target_field, --family and --byte_vocabulary go with --file")
  try:
    if args.vocab_path:
      config.configure(vocab_path=args.vocab_path)
    name = args.name
    if args.file is not None:
      name = register_file(args.file, args.input_field, args.target_field, args.family, args.name,
                           vocab_lib.demo_vocabulary() if args.byte_vocabulary else None)
    collection_dir = args.collection_dir or config.collection_dir()
    known = set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names())
    if collection_dir and name not in known:
      flan_collection.add_flan_collection(collection_dir, name=name)
    elif name not in known:
      raise ValueError(unknown_name_message(name, known))
    summary = summarize(name, args.split, args.n, args.sample, lengths, args.seed)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_report(summary, args.show_tokens))
  return 0


if __name__ == "__main__":
  sys.exit(main())

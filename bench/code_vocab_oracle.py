"""Oracle BLEU of the code tasks under the T5 vocabulary, with and without flan_tasks.code_escape.

  python bench/code_vocab_oracle.py [--data_dir ../shared/datasets] [--vocab ../shared/checkpoints/t5-spiece/spiece.model]

Each validation reference of code_java2cs (C#) is encoded with the vocabulary and decoded again,
then scored against itself: without escaping (the raw text, as before) and with it (the task's
own target text, escaped, and its postprocess_fn, which unescapes). The ratio is escaped/raw.
Writes JSON to bench/results/.
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hardware
import bench_results  # pylint: disable=g-import-not-at-top,wrong-import-position  (bench/ is on sys.path)


def oracle(references, vocabulary, to_text=lambda s: s, from_text=lambda s: s):
  from flan_tasks import metrics  # pylint: disable=g-import-not-at-top
  decoded = [from_text(vocabulary.decode(vocabulary.encode(to_text(r)))) for r in references]
  lost = sum(sum((collections.Counter(r) - collections.Counter(d)).values())
             for r, d in zip(references, decoded))
  return {"bleu": metrics.corpus_bleu(references, decoded),
          "exact_match": metrics.exact_match(references, decoded)["exact_match"],
          "characters_lost": lost,
          "references_changed": sum(r != d for r, d in zip(references, decoded))}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default="../shared/datasets")
  parser.add_argument("--vocab", default="../shared/checkpoints/t5-spiece/spiece.model")
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  path = os.path.join(args.data_dir, "code_trans_java_cs", "valid.java-cs.txt.cs")
  if not os.path.exists(path) or not os.path.exists(args.vocab):
    print(f"error: needs {path} and {args.vocab}", file=sys.stderr)
    return 2
  import seqio  # pylint: disable=g-import-not-at-top
  from flan_tasks import code_escape  # pylint: disable=g-import-not-at-top
  with open(path, encoding="utf-8") as f:
    references = [line.strip() for line in f if line.strip()]
  vocabulary = seqio.SentencePieceVocabulary(args.vocab)
  raw = oracle(references, vocabulary)
  escaped = oracle(references, vocabulary, code_escape.escape, code_escape.unescape_postprocessor)
  result = {"references": len(references), "file": path, "vocab": args.vocab, "raw": raw,
            "escaped": escaped, "bleu_ratio_escaped_over_raw": escaped["bleu"] / max(raw["bleu"], 1e-9)}
  for name, r in (("raw", raw), ("escaped", escaped)):
    print(f"{name:8s} oracle BLEU {r['bleu']:6.2f}  exact match {r['exact_match']:6.2f}%  "
          f"characters lost {r['characters_lost']}  references changed {r['references_changed']}/{len(references)}")
  print(f"ratio escaped/raw BLEU: {result['bleu_ratio_escaped_over_raw']:.3f}")
  print(bench_results.write_json("code_vocab_oracle", result))
  return 0


if __name__ == "__main__":
  sys.exit(main())

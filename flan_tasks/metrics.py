"""Metrics and postprocessors per task family, with SeqIO's `(targets, predictions) -> dict` signature.

ROUGE is F-measure x100, the maximum over references when a target is a list of references.
"""
import collections
import math
import re
from typing import Callable, Dict, List, Sequence, Set, Tuple, Union

from rouge_score import rouge_scorer

Reference = Union[str, Sequence[str]]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _as_references(target: Reference) -> List[str]:
  return [target] if isinstance(target, (str, bytes)) else list(target)


def _lsum_text(text: str) -> str:
  # rougeLsum scores summary-level LCS over sentences, which rouge-score takes as newline-separated.
  return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(targets: Sequence[Reference], predictions: Sequence[str]) -> Dict[str, float]:
  """ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measure x100 (mean over examples, max over references)."""
  _check_lengths(targets, predictions)
  types = ["rouge1", "rouge2", "rougeLsum"]
  scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
  totals = collections.defaultdict(float)
  for target, prediction in zip(targets, predictions):
    best = collections.defaultdict(float)
    for reference in _as_references(target):
      scores = scorer.score(_lsum_text(reference), _lsum_text(prediction))
      for t in types:
        best[t] = max(best[t], scores[t].fmeasure)
    for t in types:
      totals[t] += best[t]
  n = max(len(predictions), 1)
  return {t: 100.0 * totals[t] / n for t in types}


def _check_lengths(targets, predictions):
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


# -- rating -------------------------------------------------------------------------------------------
_FIRST_INT = re.compile(r"-?\d+")


def parse_rating(text: str) -> int:
  """'4', '4 stars', 'I would say 4.' -> 4; text without a number -> -1 (counted as wrong)."""
  match = _FIRST_INT.search(text)
  return int(match.group()) if match else -1


def rating_metrics(targets: Sequence[int], predictions: Sequence[int],
                   min_rating: int = 1, max_rating: int = 5) -> Dict[str, float]:
  """Accuracy x100 and mean absolute error; an unparseable prediction costs the largest error."""
  _check_lengths(targets, predictions)
  if not targets:
    return {"accuracy": 0.0, "mae": 0.0}
  correct, abs_err = 0, 0.0
  worst = max_rating - min_rating
  for target, prediction in zip(targets, predictions):
    correct += int(target == prediction)
    abs_err += worst if prediction < min_rating or prediction > max_rating else abs(
        target - prediction)
  return {"accuracy": 100.0 * correct / len(targets), "mae": abs_err / len(targets)}


# -- code ---------------------------------------------------------------------------------------------
def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Percentage of predictions equal to the target after whitespace normalization."""
  _check_lengths(targets, predictions)
  norm = lambda s: " ".join(s.split())
  hits = sum(norm(t) == norm(p) for t, p in zip(targets, predictions))
  return {"exact_match": 100.0 * hits / max(len(targets), 1)}


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_statistics(target: str, prediction: str, max_order: int = 4) -> List[float]:
  """One example's additive BLEU counts: n-gram matches, possible n-grams, reference and hypothesis lengths."""
  ref, hyp = target.split(), prediction.split()
  matches = [sum((_ngrams(hyp, n) & _ngrams(ref, n)).values()) for n in range(1, max_order + 1)]
  possible = [max(len(hyp) - n + 1, 0) for n in range(1, max_order + 1)]
  return [*matches, *possible, len(ref), len(hyp)]


def bleu_from_statistics(totals: Sequence[float], smooth: bool = True) -> float:
  """Corpus BLEU x100 from `bleu_statistics` summed over the corpus."""
  max_order = (len(totals) - 2) // 2
  matches, possible = totals[:max_order], totals[max_order:2 * max_order]
  ref_len, hyp_len = totals[-2], totals[-1]
  if hyp_len == 0:
    return 0.0
  log_precision = 0.0
  for n in range(max_order):
    num, den = matches[n], possible[n]
    if smooth and n > 0:
      num, den = num + 1, den + 1
    if num == 0 or den == 0:
      return 0.0
    log_precision += math.log(num / den) / max_order
  brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
  return 100.0 * brevity * math.exp(log_precision)


def corpus_bleu(targets: Sequence[str], predictions: Sequence[str], max_order: int = 4,
                smooth: bool = True) -> float:
  """Corpus BLEU-4 x100 on whitespace tokens, with add-one smoothing of n>1 precisions (Lin & Och)."""
  _check_lengths(targets, predictions)
  totals = [0] * (2 * max_order + 2)
  for target, prediction in zip(targets, predictions):
    totals = [a + b for a, b in zip(totals, bleu_statistics(target, prediction, max_order))]
  return bleu_from_statistics(totals, smooth)


def code_metrics(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  return {**exact_match(targets, predictions), "bleu": corpus_bleu(targets, predictions)}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  return {"bleu": corpus_bleu(targets, predictions)}


# -- NER ----------------------------------------------------------------------------------------------
def parse_entities(text: str) -> Set[Tuple[str, str]]:
  """'person: A, B; location: C' -> {('person','A'), ('person','B'), ('location','C')}; 'none' -> {}."""
  entities = set()
  for group in text.split(";"):
    type_name, sep, names = group.partition(":")
    if not sep:
      continue
    for name in names.split(","):
      if name.strip():
        entities.add((type_name.strip().lower(), " ".join(name.split())))
  return entities


def entity_statistics(target: str, prediction: str) -> List[float]:
  """One example's additive entity counts: true positives, false positives, false negatives."""
  gold, pred = parse_entities(target), parse_entities(prediction)
  return [len(gold & pred), len(pred - gold), len(gold - pred)]


def entity_from_statistics(totals: Sequence[float]) -> Dict[str, float]:
  tp, fp, fn = totals
  if tp + fp + fn == 0:  # every sentence correctly has no entities
    return {"entity_precision": 100.0, "entity_recall": 100.0, "entity_f1": 100.0}
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"entity_precision": 100 * precision, "entity_recall": 100 * recall, "entity_f1": 100 * f1}


def entity_f1(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Micro entity-level precision, recall and F1 x100 over (type, text) pairs."""
  _check_lengths(targets, predictions)
  totals = [0, 0, 0]
  for target, prediction in zip(targets, predictions):
    totals = [a + b for a, b in zip(totals, entity_statistics(target, prediction))]
  return entity_from_statistics(totals)


# Corpus-level metrics (not a mean over examples) declare additive per-example statistics, so that
# flan_t5x's bootstrap recomputes them exactly on every resample without re-reading the texts:
# {metric name: (statistics(target, prediction) -> list, from_totals(summed list) -> value)}.
_BLEU_STATISTICS = {"bleu": (bleu_statistics, bleu_from_statistics)}
code_metrics.corpus_statistics = _BLEU_STATISTICS
bleu.corpus_statistics = _BLEU_STATISTICS
entity_f1.corpus_statistics = {
    name: (entity_statistics, lambda totals, name=name: entity_from_statistics(totals)[name])
    for name in ("entity_precision", "entity_recall", "entity_f1")}


# -- postprocessors (seqio calls them with `example` and `is_target`) ---------------------------------
def rating_postprocessor(output: str, example=None, is_target: bool = False) -> int:
  del example, is_target
  return parse_rating(output)


def strip_postprocessor(output: str, example=None, is_target: bool = False) -> str:
  del example, is_target
  return output.strip()


METRICS_BY_NAME: Dict[str, Callable] = {
    "rouge": rouge,
    "rating": rating_metrics,
    "exact_match": exact_match,
    "code": code_metrics,
    "bleu": bleu,
    "entity_f1": entity_f1,
}


def resolve_metrics(metrics: Sequence[Union[str, Callable]]) -> List[Callable]:
  resolved = []
  for metric in metrics:
    if callable(metric):
      resolved.append(metric)
    elif metric in METRICS_BY_NAME:
      resolved.append(METRICS_BY_NAME[metric])
    else:
      raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS_BY_NAME)} or a callable")
  return resolved

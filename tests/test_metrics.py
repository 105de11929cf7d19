"""Metrics against reference implementations and hand-computed values."""
import math

import pytest
from rouge_score import rouge_scorer

from flan_tasks import metrics


def test_rouge_matches_rouge_score_on_known_strings():
  targets = ["The cat sat on the mat. It was happy.", "Anna will meet Ben at noon."]
  predictions = ["A cat sat on a mat. It was very happy.", "Ben meets Anna at noon today."]
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
  expected = {k: 0.0 for k in ("rouge1", "rouge2", "rougeLsum")}
  for t, p in zip(targets, predictions):
    scores = scorer.score(t.replace(". ", ".\n"), p.replace(". ", ".\n"))
    for k in expected:
      expected[k] += 100 * scores[k].fmeasure / len(targets)
  got = metrics.rouge(targets, predictions)
  for k in expected:
    assert got[k] == pytest.approx(expected[k], abs=1e-9)
  assert 0 < got["rouge2"] < got["rouge1"] < 100


def test_rouge_takes_the_best_reference():
  single = metrics.rouge(["completely different words"], ["the cat sat"])
  multi = metrics.rouge([["completely different words", "the cat sat"]], ["the cat sat"])
  assert single["rouge1"] == 0.0 and multi["rouge1"] == pytest.approx(100.0)


def test_rating_metrics_and_parsing():
  assert metrics.parse_rating("4 stars") == 4 and metrics.parse_rating("five") == -1
  got = metrics.rating_metrics([5, 3, 1, 2], [5, 4, 1, -1])
  assert got["accuracy"] == pytest.approx(50.0)
  assert got["mae"] == pytest.approx((0 + 1 + 0 + 4) / 4)  # unparseable costs the worst error


def test_bleu_hand_computed():
  assert metrics.corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
  # hyp "a b c x" vs ref "a b c d": p1=3/4, p2=(2+1)/(3+1), p3=(1+1)/(2+1), p4=(0+1)/(1+1)
  expected = 100 * math.exp((math.log(3 / 4) + math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2)) / 4)
  assert metrics.corpus_bleu(["a b c d"], ["a b c x"]) == pytest.approx(expected)
  # brevity penalty for a short hypothesis
  short = metrics.corpus_bleu(["a b c d e f"], ["a b c"])
  assert short < metrics.corpus_bleu(["a b c"], ["a b c"])
  assert metrics.corpus_bleu(["a b"], [""]) == 0.0


def test_exact_match_normalizes_whitespace():
  got = metrics.exact_match(["int f ( ) { }", "x"], ["int  f ( )\n{ }", "y"])
  assert got["exact_match"] == pytest.approx(50.0)


def test_entity_f1():
  assert metrics.parse_entities("person: Ann, Bob; location: Oslo") == {
      ("person", "Ann"), ("person", "Bob"), ("location", "Oslo")}
  assert metrics.parse_entities("none") == set()
  got = metrics.entity_f1(["person: Ann, Bob; location: Oslo"], ["person: Ann; location: Rome"])
  # tp=1 (Ann), fp=1 (Rome), fn=2 (Bob, Oslo): P=1/2, R=1/3, F1=0.4
  assert got["entity_precision"] == pytest.approx(50.0)
  assert got["entity_recall"] == pytest.approx(100 / 3)
  assert got["entity_f1"] == pytest.approx(40.0)
  assert metrics.entity_f1(["none"], ["none"])["entity_f1"] == pytest.approx(100.0)


def test_length_mismatch_and_unknown_metric():
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.rouge(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="unknown metric 'meteor'"):
    metrics.resolve_metrics(["rouge", "meteor"])

"""Uncertainty of evaluation metrics: bootstrap confidence intervals and paired significance tests.

A task's metric is recomputed on resamples of its examples (drawn with replacement, Efron &
Tibshirani 1993). Metrics that are a mean over examples (ROUGE, accuracy, exact match) resample
their per-example values; corpus-level metrics are recomputed per resample: from additive
per-example statistics where the metric function declares them (`metric_fn.corpus_statistics`,
e.g. BLEU's n-gram counts, entity F1's tp/fp/fn in flan_tasks.metrics), else by calling the
metric function on the resampled texts. Two models scored on the same examples are compared
pairwise: the same resamples for both give the interval of their difference (Koehn 2004), and a
paired permutation test (approximate randomization: swap the two models' outputs per example,
Riezler & Maxwell 2005) gives its p-value. Intervals are percentile intervals.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

MetricFn = Callable[[Sequence[Any], Sequence[Any]], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class BootstrapConfig:
  """How many resamples, from which seed, at which confidence level (recorded with every interval)."""
  resamples: int = 1000
  seed: int = 0
  confidence: float = 0.95

  def __post_init__(self):
    if self.resamples < 1:
      raise ValueError(f'BootstrapConfig.resamples must be positive, got {self.resamples}.')
    if not 0 < self.confidence < 1:
      raise ValueError(f'BootstrapConfig.confidence must be in (0, 1), got {self.confidence}.')

  def record(self) -> dict:
    return {**dataclasses.asdict(self), 'method': 'percentile bootstrap over examples; paired permutation test'}


def _value(value) -> float:
  return float(getattr(value, 'value', value))


def _call(metric_fn: MetricFn, targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  return {name: _value(v) for name, v in metric_fn(list(targets), list(predictions)).items()}


class ExampleScores:
  """One model's outputs on a task's examples, scored so that any resample's metrics are cheap to get."""

  def __init__(self, metric_fns: Sequence[MetricFn], targets: Sequence[Any], predictions: Sequence[Any]):
    if len(targets) != len(predictions):
      raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions.')
    self.targets, self.predictions = list(targets), list(predictions)
    self.metrics: dict[str, float] = {}
    self._per_example: dict[str, np.ndarray] = {}  # mean metrics: value per example
    self._statistics: dict[str, tuple[np.ndarray, Callable]] = {}  # corpus metrics: NxK stats, totals -> value
    self._opaque: dict[str, MetricFn] = {}  # corpus metrics recomputed from the texts
    for metric_fn in metric_fns:
      full = _call(metric_fn, self.targets, self.predictions)
      self.metrics.update(full)
      declared = getattr(metric_fn, 'corpus_statistics', {})
      singles = None
      for name, value in full.items():
        if name in declared:
          statistics, from_totals = declared[name]
          stats_NxK = np.asarray([statistics(t, p) for t, p in zip(self.targets, self.predictions)], np.float64)
          self._statistics[name] = (stats_NxK, from_totals)
          continue
        if singles is None:
          singles = [_call(metric_fn, [t], [p]) for t, p in zip(self.targets, self.predictions)]
        values_N = np.asarray([s[name] for s in singles], np.float64)
        if math.isclose(values_N.mean(), value, rel_tol=1e-9, abs_tol=1e-9):
          self._per_example[name] = values_N
        else:
          self._opaque[name] = metric_fn

  def __len__(self) -> int:
    return len(self.targets)

  def per_example(self, name: str) -> np.ndarray | None:
    """Each example's value of a mean metric, or its value on that example alone for a corpus metric."""
    if name in self._per_example:
      return self._per_example[name]
    if name in self._statistics:
      stats_NxK, from_totals = self._statistics[name]
      return np.asarray([from_totals(row) for row in stats_NxK])
    if name in self._opaque:
      return np.asarray([_call(self._opaque[name], [t], [p])[name] for t, p in zip(self.targets, self.predictions)])
    return None

  def on(self, name: str, indices_RxN: np.ndarray, swap_with: 'ExampleScores | None' = None,
         swap_RxN: np.ndarray | None = None) -> np.ndarray:
    """The metric on each row of resampled example indices (optionally with examples taken from another model)."""
    def pick(values_N, other_N):
      taken = values_N[indices_RxN]
      return taken if swap_RxN is None else np.where(swap_RxN, other_N[indices_RxN], taken)
    other = swap_with or self
    if name in self._per_example:
      return pick(self._per_example[name], other._per_example[name]).mean(axis=1)
    if name in self._statistics:
      stats_NxK, from_totals = self._statistics[name]
      other_NxK = other._statistics[name][0]
      taken_RxNxK = stats_NxK[indices_RxN]
      if swap_RxN is not None:
        taken_RxNxK = np.where(swap_RxN[..., None], other_NxK[indices_RxN], taken_RxNxK)
      return np.asarray([from_totals(list(totals)) for totals in taken_RxNxK.sum(axis=1)])
    if name in self._opaque:
      values = []
      for r, row in enumerate(indices_RxN):
        predictions = [other.predictions[i] if swap_RxN is not None and swap_RxN[r, j] else self.predictions[i]
                       for j, i in enumerate(row)]
        values.append(_call(self._opaque[name], [self.targets[i] for i in row], predictions)[name])
      return np.asarray(values)
    raise KeyError(f'No metric {name!r}; have {sorted(self.metrics)}.')


def _rng(cfg: BootstrapConfig, key: str) -> np.random.Generator:
  # One stream per (seed, task/template), so adding a task does not change another's intervals.
  return np.random.default_rng([cfg.seed, zlib.crc32(key.encode('utf-8'))])


def resample_indices(rows: Sequence[int], cfg: BootstrapConfig, key: str = '') -> np.ndarray:
  """cfg.resamples rows of len(rows) indices drawn with replacement from `rows`."""
  rows_N = np.asarray(rows, np.int64)
  return rows_N[_rng(cfg, key).integers(0, len(rows_N), size=(cfg.resamples, len(rows_N)))]


def percentile_interval(values_R: np.ndarray, confidence: float) -> tuple[float, float]:
  tail = (1 - confidence) / 2 * 100
  low, high = np.percentile(np.asarray(values_R, np.float64), [tail, 100 - tail])
  return float(low), float(high)


def metric_intervals(scores: ExampleScores, cfg: BootstrapConfig, rows: Sequence[int] | None = None,
                     key: str = '') -> dict[str, dict]:
  """{metric: {'value', 'low', 'high', 'num_examples'}} over `rows` (default: every example)."""
  rows = list(range(len(scores))) if rows is None else list(rows)
  if not rows:
    return {}
  indices_RxN = resample_indices(rows, cfg, key)
  out = {}
  full_N = np.asarray([rows])
  for name in scores.metrics:
    low, high = percentile_interval(scores.on(name, indices_RxN), cfg.confidence)
    out[name] = {'value': float(scores.on(name, full_N)[0]), 'low': low, 'high': high, 'num_examples': len(rows)}
  return out


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """b - a on the same examples: the point estimate, its interval and the permutation test's p-value."""
  a: float
  b: float
  delta: float
  low: float
  high: float
  p_value: float
  num_examples: int

  @property
  def spans_zero(self) -> bool:
    return self.low <= 0 <= self.high

  def record(self) -> dict:
    return {**dataclasses.asdict(self), 'spans_zero': self.spans_zero}


def significant(diff: 'PairedDifference | Mapping', cfg: BootstrapConfig) -> bool:
  """The one rule for "significant" everywhere (eval's compare table and chart, the forgetting study's
  summary and matrix): the paired bootstrap interval excludes 0 and the paired permutation test's
  p-value (after any multiple-comparison adjustment) is below 1 - confidence."""
  found = diff.record() if isinstance(diff, PairedDifference) else diff
  return not found['low'] <= 0 <= found['high'] and found['p_value'] < 1 - cfg.confidence


LOWER_IS_BETTER = ('loss', 'perplexity', 'ter', 'wer', 'cer')  # metric names (or their _suffixes)


def direction(name: str) -> str:
  """'higher is better' or 'lower is better', from the metric's name (the task metrics here are all higher)."""
  lower = name.lower()
  return ('lower is better' if any(lower == n or lower.endswith('_' + n) for n in LOWER_IS_BETTER)
          else 'higher is better')


def same_examples(a_inputs: Sequence[Any], b_inputs: Sequence[Any]) -> bool:
  return len(a_inputs) == len(b_inputs) and all(x == y for x, y in zip(a_inputs, b_inputs))


def paired_resamples(a: ExampleScores, b: ExampleScores, name: str, cfg: BootstrapConfig,
                     rows: Sequence[int] | None = None, key: str = '') -> tuple[float, np.ndarray]:
  """(b - a on `rows`, b - a on each bootstrap resample of them): for sums over tasks."""
  rows = list(range(len(a))) if rows is None else list(rows)
  if len(a) != len(b):
    raise ValueError(f'Paired comparison needs the same examples: {len(a)} vs {len(b)}.')
  full_N = np.asarray([rows])
  delta = float(b.on(name, full_N)[0] - a.on(name, full_N)[0])
  indices_RxN = resample_indices(rows, cfg, key)
  return delta, b.on(name, indices_RxN) - a.on(name, indices_RxN)


def paired_difference(a: ExampleScores, b: ExampleScores, name: str, cfg: BootstrapConfig,
                      rows: Sequence[int] | None = None, key: str = '') -> PairedDifference:
  """b - a on the same examples (`rows`), with its bootstrap interval and permutation p-value."""
  return paired_comparison(a, b, name, cfg, rows, key)[0]


def paired_comparison(a: ExampleScores, b: ExampleScores, name: str, cfg: BootstrapConfig,
                      rows: Sequence[int] | None = None, key: str = ''
                      ) -> tuple[PairedDifference, np.ndarray, np.ndarray]:
  """(paired_difference, b - a on each bootstrap resample, b - a under each permutation): the draws
  too, for numbers combined over tasks (the forgetting study's summary)."""
  rows = list(range(len(a))) if rows is None else list(rows)
  delta, deltas_R = paired_resamples(a, b, name, cfg, rows, key)
  low, high = percentile_interval(deltas_R, cfg.confidence)
  permuted_R = permuted_differences(a, b, name, cfg, rows, key)
  full_N = np.asarray([rows])
  diff = PairedDifference(float(a.on(name, full_N)[0]), float(b.on(name, full_N)[0]), delta, low, high,
                          permutation_p_value(delta, permuted_R), len(rows))
  return diff, deltas_R, permuted_R


def permuted_differences(a: ExampleScores, b: ExampleScores, name: str, cfg: BootstrapConfig,
                         rows: Sequence[int] | None = None, key: str = '') -> np.ndarray:
  """b - a under cfg.resamples random swaps of each example's two outputs (approximate randomization:
  under "no difference" they are exchangeable); the swaps depend on (seed, key) only."""
  rows = list(range(len(a))) if rows is None else list(rows)
  rows_RxN = np.broadcast_to(np.asarray(rows, np.int64), (cfg.resamples, len(rows)))
  swap_RxN = _rng(cfg, 'permutation/' + key).random((cfg.resamples, len(rows))) < 0.5
  return b.on(name, rows_RxN, swap_with=a, swap_RxN=swap_RxN) - a.on(name, rows_RxN, swap_with=b, swap_RxN=swap_RxN)


def permutation_p_value(observed: float, permuted_R: np.ndarray) -> float:
  """Two-sided: the share of permuted values at least as far from 0 as the observed one (+1 smoothing)."""
  extreme = int(np.sum(np.abs(np.asarray(permuted_R)) >= abs(observed) - 1e-12))
  return (extreme + 1) / (len(permuted_R) + 1)


CORRECTIONS = ('none', 'holm', 'bh')


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
  """Multiple-comparison adjustment of one family of tests: 'none', 'holm' (Holm 1979: family-wise error)
  or 'bh' (Benjamini & Hochberg 1995: false discovery rate); adjusted values keep the input order."""
  if method not in CORRECTIONS:
    raise ValueError(f'correction must be one of {CORRECTIONS}, got {method!r}.')
  p_N = np.asarray(p_values, np.float64)
  n = len(p_N)
  if method == 'none' or n == 0:
    return [float(p) for p in p_N]
  order = np.argsort(p_N, kind='stable')
  adjusted = np.empty(n)
  if method == 'holm':
    running = 0.0
    for rank, index in enumerate(order):
      running = max(running, (n - rank) * p_N[index])
      adjusted[index] = min(1.0, running)
  else:
    running = 1.0
    for rank in range(n - 1, -1, -1):
      index = order[rank]
      running = min(running, p_N[index] * n / (rank + 1))
      adjusted[index] = min(1.0, running)
  return [float(p) for p in adjusted]


def format_interval(value: float, low: float, high: float, signed: bool = False) -> str:
  """'12.30 [10.10, 14.50]', signs shown when `signed`; never '-0.00'."""
  return f'{format_number(value, signed)} [{format_number(low, signed)}, {format_number(high, signed)}]'


def format_number(value: float, signed: bool = False) -> str:
  text = f'{value:+.2f}' if signed else f'{value:.2f}'
  if float(text) == 0:
    return '+0.00' if signed else '0.00'
  return text

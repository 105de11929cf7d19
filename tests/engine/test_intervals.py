"""Bootstrap intervals and permutation tests against hand-computed cases; sanity flags; compare with intervals."""
import json
import math

import numpy as np
import pytest

from flan_t5x import compare
from flan_t5x import intervals
from flan_t5x import sanity

flan_tasks = pytest.importorskip('flan_tasks')
from flan_tasks import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_bootstrap_matches_the_hand_computed_distribution_and_is_deterministic():
  # Exact match on 3 examples, one right: a resample's score is 100 k / 3 with k ~ Binomial(3, 1/3),
  # so P(0) = 8/27, P(33.3) = 12/27, P(66.7) = 6/27, P(100) = 1/27. The 90% percentile interval is
  # [0, 66.67]: 8/27 > 5% of the mass sits at 0, and 26/27 > 95% at or below 66.67.
  scores = intervals.ExampleScores([metrics.exact_match], ['a', 'b', 'c'], ['a', 'x', 'y'])
  cfg = intervals.BootstrapConfig(resamples=20000, seed=7, confidence=0.9)
  resampled_R = scores.on('exact_match', intervals.resample_indices(range(3), cfg))
  for k, probability in enumerate([8 / 27, 12 / 27, 6 / 27, 1 / 27]):
    assert np.mean(np.isclose(resampled_R, 100 * k / 3)) == pytest.approx(probability, abs=0.01)
  found = intervals.metric_intervals(scores, cfg)['exact_match']
  assert found['value'] == pytest.approx(100 / 3)
  assert (found['low'], found['high']) == (0.0, pytest.approx(200 / 3))
  assert found['num_examples'] == 3
  assert intervals.metric_intervals(scores, cfg) == {'exact_match': found}  # same seed, same interval
  other = intervals.metric_intervals(scores, intervals.BootstrapConfig(resamples=50, seed=8, confidence=0.9))
  again = intervals.metric_intervals(scores, intervals.BootstrapConfig(resamples=50, seed=8, confidence=0.9))
  assert other == again


def test_corpus_metrics_are_recomputed_on_each_resample():
  targets = ['int a = 1 ;', 'return b + c ;', 'x = y ;']
  predictions = ['int a = 1 ;', 'return b ;', 'x = z ;']
  scores = intervals.ExampleScores([metrics.code_metrics], targets, predictions)
  assert scores.metrics['bleu'] == pytest.approx(metrics.corpus_bleu(targets, predictions))
  indices_RxN = np.array([[0, 0, 1], [2, 1, 1], [0, 1, 2]])
  expected = [metrics.corpus_bleu([targets[i] for i in row], [predictions[i] for i in row]) for row in indices_RxN]
  np.testing.assert_allclose(scores.on('bleu', indices_RxN), expected)  # BLEU of the resample, not a mean
  assert scores.metrics['bleu'] != pytest.approx(np.mean(scores.per_example('bleu')))
  entities = intervals.ExampleScores([metrics.entity_f1], ['person: A', 'none', 'location: B; person: C'],
                                     ['person: A', 'person: D', 'location: B'])
  rows = np.array([[1, 2, 2]])
  assert entities.on('entity_f1', rows)[0] == pytest.approx(
      metrics.entity_f1(['none', 'location: B; person: C', 'location: B; person: C'],
                        ['person: D', 'location: B', 'location: B'])['entity_f1'])


def test_paired_permutation_test_and_interval_by_hand():
  # b beats a on all 5 examples by 100 points: a sign-flip permutation reaches |delta| = 100 only when
  # all five flips agree, so p = 2 / 2**5 = 1/16; every bootstrap resample gives delta = 100.
  a = intervals.ExampleScores([metrics.exact_match], list('abcde'), list('vwxyz'))
  b = intervals.ExampleScores([metrics.exact_match], list('abcde'), list('abcde'))
  cfg = intervals.BootstrapConfig(resamples=20000, seed=0)
  diff = intervals.paired_difference(a, b, 'exact_match', cfg)
  assert (diff.a, diff.b, diff.delta, diff.low, diff.high) == (0.0, 100.0, 100.0, 100.0, 100.0)
  assert diff.p_value == pytest.approx(1 / 16, abs=0.006) and not diff.spans_zero
  # One discordant pair of four: the interval spans 0 and no permutation is less extreme (p = 1).
  c = intervals.ExampleScores([metrics.exact_match], list('abcd'), list('abcz'))
  d = intervals.ExampleScores([metrics.exact_match], list('abcd'), list('abcd'))
  small = intervals.paired_difference(c, d, 'exact_match', intervals.BootstrapConfig(resamples=2000, seed=0))
  assert small.delta == 25.0 and small.low == 0.0 and small.spans_zero and small.p_value == 1.0
  assert intervals.format_number(-0.001, True) == '+0.00' and intervals.format_number(-0.001) == '0.00'


def test_prediction_flags():
  targets = [f'summary {i}' for i in range(10)]
  same = sanity.prediction_flags(['Jack will be'] * 9 + ['other'], targets, None)
  assert [f['flag'] for f in same] == ['input_independent'] and '90% of 10 inputs' in same[0]['detail']
  assert sanity.prediction_flags([f'out {i}' for i in range(10)], targets, None) == []
  # A classifier predicting the majority class as often as it occurs is not flagged; always predicting it is.
  ratings = ['5'] * 6 + ['1', '2', '3', '4']
  assert sanity.prediction_flags(ratings, ratings, None) == []
  assert [f['flag'] for f in sanity.prediction_flags(['5'] * 10, ratings, None)] == ['input_independent']
  short = sanity.prediction_flags([f'out {i}' for i in range(10)], targets, 64)
  assert short == [{'flag': 'fewer_examples', 'detail': '10 examples evaluated, 64 asked'}]


def test_history_flags():
  steady = [(s, 3.0 - s / 100) for s in range(10, 210, 10)]
  assert sanity.history_flags(steady, 0) == []
  spiked = steady[:10] + [(s, 4.0) for s in range(110, 210, 10)]  # ends above where it started
  assert [f['flag'] for f in sanity.history_flags(spiked, 0)] == ['diverged']
  assert [f['flag'] for f in sanity.history_flags(steady[:5] + [(60, math.inf)], 0)] == ['non_finite_loss']
  assert [f['flag'] for f in sanity.history_flags([(12, 0.5)], 12)] == ['zero_steps']
  assert [f['flag'] for f in sanity.history_flags([], 12)] == ['zero_steps']


SUPPORT_TARGETS = ['Ines gets a refund for the broken book.', 'Tom asks about his late order.',
                   'Ana changes her delivery address.', 'Bo cancels the subscription.',
                   'Kim reports a missing item.', 'Lu wants a bigger size.']


def _eval_dir(path, tasks, step):
  """An EVAL_OUTPUT_DIR as flan_t5x.eval writes it, for {task: (targets, predictions, templates)}."""
  import seqio  # pylint: disable=g-import-not-at-top
  path.mkdir()
  results = {}
  for task, (target_texts, prediction_texts, templates) in tasks.items():
    provider = seqio.get_mixture_or_task(task)
    fns = provider.predict_metric_fns
    targets = [provider.postprocess_fn(t, example={}, is_target=True) for t in target_texts]
    predictions = [provider.postprocess_fn(p, example={}, is_target=False) for p in prediction_texts]
    by_template = {}
    for template in sorted(set(templates)):
      rows = [i for i, t in enumerate(templates) if t == template]
      by_template[str(template)] = {'num_examples': len(rows), 'metrics': intervals.ExampleScores(
          fns, [targets[i] for i in rows], [predictions[i] for i in rows]).metrics}
    results[task] = {'task': task, 'num_examples': len(targets), 'requested_examples': len(targets),
                     'metrics': intervals.ExampleScores(fns, targets, predictions).metrics,
                     'by_template': by_template, 'step': step, 'checkpoint': None}
    (path / f'{task}-predictions.jsonl').write_text(''.join(
        json.dumps({'input': f'chat {i}', 'target': t, 'prediction': p, 'template_idx': templates[i]}) + '\n'
        for i, (t, p) in enumerate(zip(target_texts, prediction_texts))))
  (path / 'results.json').write_text(json.dumps({'checkpoint_path': None, 'step': step, 'checkpoint': None,
                                                 'tasks': results}))
  return str(path)


def test_compare_two_tiny_eval_dirs_with_counts_intervals_flags_and_examples(tmp_path, capsys):
  templates = [0, 1, 0, 1, 0, 1]
  base = _eval_dir(tmp_path / 'base', {'demo_support_zs': (SUPPORT_TARGETS, ['Someone writes.'] * 6, templates)}, 100)
  tuned = _eval_dir(tmp_path / 'tuned', {'demo_support_zs': (SUPPORT_TARGETS, SUPPORT_TARGETS[:5] + ['No.'],
                                                             templates)}, 200)
  report = compare.compare([base, tuned], cfg=intervals.BootstrapConfig(resamples=500, seed=0))
  assert '| template | run | examples | rouge1 | rouge2 | rougeLsum |' in report
  rows = {line.split(' | ')[0] + ' | ' + line.split(' | ')[1]: line for line in report.splitlines()
          if line.startswith('| all |') or line.startswith('| 0 |')}
  base_row, tuned_row = rows['| all | base (step 100)'], rows['| all | tuned (step 200)']
  assert ' | 6 | ' in base_row and ' | 6 | ' in tuned_row  # example counts
  assert ' | 3 | ' in rows['| 0 | base (step 100)']  # per-template counts
  assert '[' in base_row  # intervals on the values
  rouge1_delta = tuned_row.split(' | ')[3]
  # 5 of 6 examples from 0 to 100: +83.33, the interval excludes 0, but with 5 discordant examples the
  # permutation test cannot go below p = 2 / 2**5 = 0.0625, so the difference is not marked significant.
  assert rouge1_delta.startswith('83.33 [') and '; +83.33 [+50.00, +100.00] p=0.0' in rouge1_delta
  assert '**' not in rouge1_delta
  assert '**input_independent**: 100% of 6 inputs' in report  # the base answers every chat alike
  assert '500 resamples, seed 0' in report
  assert '-0.00' not in report

  compare.bar_chart([base, tuned], str(tmp_path / 'chart.png'), intervals.BootstrapConfig(resamples=100))
  assert (tmp_path / 'chart.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  md, page = compare.side_by_side([base, tuned], str(tmp_path / 'diff'), per_task=2)
  text = open(md).read()
  assert '## demo_support_zs: tuned (step 200) vs base (step 100) (per-example rougeLsum)' in text
  assert SUPPORT_TARGETS[0] in text and 'No.' not in text  # the largest gaps first, 2 shown
  page_html = open(page).read()
  assert '<table>' in page_html and '<style>' in page_html and 'data-task="demo_support_zs"' in page_html
  assert '<select id="task"' not in page_html  # one task: nothing to filter
  two = _eval_dir(tmp_path / 'two', {'demo_support_zs': (SUPPORT_TARGETS, SUPPORT_TARGETS, templates),
                                     'demo_restaurant_zs': (['5', '4'], ['5', '3'], [0, 0])}, 3)
  two_base = _eval_dir(tmp_path / 'two_base', {'demo_support_zs': (SUPPORT_TARGETS, ['x'] * 6, templates),
                                               'demo_restaurant_zs': (['5', '4'], ['4', '4'], [0, 0])}, 1)
  _, page = compare.side_by_side([two_base, two], str(tmp_path / 'diff2'), per_task=2)
  page_html = open(page).read()
  assert '<option value="demo_restaurant_zs">demo_restaurant_zs</option>' in page_html  # filter by task
  assert page_html.count('<section data-task=') == 2 and 'class="better"' in page_html

  other = _eval_dir(tmp_path / 'other', {'demo_restaurant_zs': (['5', '4'], ['5', '3'], [0, 0])}, 5)
  capsys.readouterr()
  report = compare.compare([base, other], cfg=intervals.BootstrapConfig(resamples=50))
  assert 'share no task' in report and 'share no task' in capsys.readouterr().err


def test_study_analysis_intervals_flags_and_reference_arm(tmp_path):
  from flan_t5x import forgetting  # pylint: disable=g-import-not-at-top
  from flan_t5x import forgetting_metrics as fm  # pylint: disable=g-import-not-at-top
  ratings = ['5', '4', '1', '2', '5', '3']
  templates = [0] * 6
  def model(name, support, restaurant):
    return _eval_dir(tmp_path / name, {'demo_support_zs': (SUPPORT_TARGETS, support, templates),
                                       'demo_restaurant_zs': (ratings, restaurant, templates)}, 1)
  eval_dirs = {'base': model('base', ['A chat.', 'Tom asks.', 'Ana.', 'Bo.', 'Kim.', 'Lu.'], ratings[:4] + ['1', '1']),
               'single_task': model('single', SUPPORT_TARGETS, ['1', '4', '1', '2', '3', '1']),
               'replay': model('replay', SUPPORT_TARGETS[:5] + ['Lu.'], ratings),
               'collapsed': model('collapsed', ['Jack be will'] * 6, ['5'] * 6)}
  suite = fm.Suite(target=('demo_support_zs',), held_in=('demo_restaurant_zs',))
  steady = [(s, 2.0 - s / 1000) for s in range(10, 110, 10)]
  curves = {'single_task': steady, 'replay': steady, 'collapsed': steady[:5] + [(s, 5.0) for s in range(60, 110, 10)]}
  cfg = intervals.BootstrapConfig(resamples=400, seed=0)
  analyse = forgetting._analyse  # pylint: disable=protected-access
  results = analyse(suite, eval_dirs, curves, 0, cfg, False, 'single_task')
  assert results['flags']['collapsed']['exclude']
  assert {f['flag'] for f in results['flags']['collapsed']['flags']} == {'diverged', 'input_independent'}
  assert not results['flags']['replay']['exclude'] and not results['flags']['single_task']['exclude']
  assert results['summarized_arms'] == ['replay', 'single_task']
  single = results['uncertainty']['arms']['single_task']
  assert single['change']['demo_support_zs']['delta'] == pytest.approx(results['arms']['single_task']['change'][
      'demo_support_zs'])
  assert not single['derived']['target_gain']['spans_zero']  # every summary is now right
  assert results['uncertainty']['num_examples'] == {'demo_support_zs': 6, 'demo_restaurant_zs': 6}
  versus = results['versus_reference']['uncertainty']['arms']['replay']['change']['demo_restaurant_zs']
  # replay keeps 3 more ratings than single-task; with 3 discordant examples the permutation p is 2 / 2**3
  assert versus['delta'] == pytest.approx(50.0) and versus['p_value'] == pytest.approx(0.25, abs=0.05)
  results.update(learning_rates={'single_task': None, 'replay': None, 'collapsed': 0.001},
                 eval_dirs=eval_dirs, commands=['python -m flan_t5x.train ...'])
  forgetting._write_outputs(str(tmp_path), suite, results)  # pylint: disable=protected-access
  report = (tmp_path / 'report.md').read_text()
  summary = report.split('## Sanity flags')[0]
  assert '| replay |' in summary and '| collapsed' not in summary and 'Left out' in summary
  assert '- collapsed: **diverged**' in report and '## Against single_task' in report
  assert '| collapsed | 0.001 |' in report and '400 resamples' in report
  for name in ('results.json', 'change.png', 'curves.png', 'examples.md', 'examples.html'):
    assert (tmp_path / name).is_file()
  # One rule in the summary and the matrix: bold needs the interval to exclude 0 and p < 0.05; the summary's
  # derived numbers have permutation p-values too. 6 examples: at best p = 2/2**6, so a summary cell may
  # have an interval excluding 0 and still not be bold.
  gain = single['derived']['target_gain']
  assert 0 < gain['p_value'] <= 1 and gain['p_value'] == gain['p_value_unadjusted']
  for arm in ('single_task', 'replay'):
    for family in ('change', 'derived'):
      for name, found in results['uncertainty']['arms'][arm][family].items():
        cell = fm._with_interval(found.get('delta', 1.0), found, cfg)  # pylint: disable=protected-access
        assert cell.startswith('**') == (not found['spans_zero'] and found['p_value'] < 0.05), (arm, name, cell)
  assert 'held-out change: higher is better; mean and max forgetting: lower is better' in summary
  assert 'p-values are not adjusted' in report and "correction = 'holm'" in report
  holm = analyse(suite, eval_dirs, curves, 0, cfg, False, 'single_task', 'holm')['uncertainty']
  found = [e for arm in holm['arms'].values() for e in arm['change'].values()]
  raw = sorted(e['p_value_unadjusted'] for e in found)
  assert sorted(e['p_value'] for e in found)[0] == pytest.approx(min(1.0, len(found) * raw[0]))
  assert all(e['p_value'] >= e['p_value_unadjusted'] for e in found)


def test_holm_and_benjamini_hochberg_by_hand():
  p = [0.01, 0.04, 0.03, 0.5]
  assert intervals.adjust_p_values(p, 'none') == p
  # Holm: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, running max: 0.04, 0.09, 0.09, 0.5
  assert intervals.adjust_p_values(p, 'holm') == pytest.approx([0.04, 0.09, 0.09, 0.5])
  # BH: p * 4 / rank, running min from the largest: 0.5, 0.053.., 0.053.., 0.04
  assert intervals.adjust_p_values(p, 'bh') == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
  with pytest.raises(ValueError, match='correction must be one of'):
    intervals.adjust_p_values(p, 'bonferroni')


def test_readme_compare_command(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  with open(os.path.join(gin_utils.REPO_ROOT, 'README.md')) as f:
    readme = f.read()
  command = next(line for line in readme.splitlines() if line.startswith('python -m flan_t5x.compare '))
  (tmp_path / 'runs').mkdir()
  templates = [0, 1, 0, 1, 0, 1]
  _eval_dir(tmp_path / 'runs' / 'eval_base', {'demo_support_zs': (SUPPORT_TARGETS, ['A chat.'] * 6, templates)}, 1)
  _eval_dir(tmp_path / 'runs' / 'eval_finetuned', {'demo_support_zs': (SUPPORT_TARGETS, SUPPORT_TARGETS, templates)}, 2)
  env = dict(os.environ, PYTHONPATH=str(gin_utils.REPO_ROOT))
  done = subprocess.run([sys.executable, *shlex.split(command)[1:], '--resamples', '200'], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert '| all | eval_finetuned (step 2) | 6 |' in done.stdout
  for name in ('compare.png', 'diff.md', 'diff.html'):
    assert (tmp_path / 'runs' / name).is_file(), name


def test_a_short_flat_run_is_not_diverged():
  flat = [(410, 2.00), (420, 1.97), (430, 2.04), (440, 2.03)]  # 40 steps, loss wobbling by 3%
  assert sanity.history_flags(flat, 400) == []


def test_compare_warns_on_different_example_sets_and_pairs_only_the_shared_ones(tmp_path, capsys):
  """100 vs 50 examples in the issue; here 6 vs 4 (3 shared + 1 the base never saw)."""
  templates = [0, 1, 0, 1, 0, 1]
  base = _eval_dir(tmp_path / 'base', {'demo_support_zs': (SUPPORT_TARGETS, ['Someone writes.'] * 6, templates)}, 1)
  fewer = _eval_dir(tmp_path / 'fewer', {'demo_support_zs': (SUPPORT_TARGETS[:3] + ['An unseen target.'],
                                                             SUPPORT_TARGETS[:3] + ['No.'], templates[:4])}, 2)
  # The last example's input differs from the base's 4th ('chat 3' has another target): not shared.
  report = compare.compare([base, fewer], cfg=intervals.BootstrapConfig(resamples=200, seed=0))
  warning = (f'demo_support_zs: {base} evaluated 6 examples and {fewer} 4, not the same ones; their differences '
             'are computed on the 3 examples both evaluated (same input and target).')
  assert f'> warning: {warning}' in report and f'warning: {warning}' in capsys.readouterr().err
  row = next(line for line in report.splitlines() if line.startswith('| all | fewer'))
  rouge1 = row.split(' | ')[3]
  # On the 3 shared examples the base scores 0 and `fewer` 100 each: +100 exactly, not +(75 - 0).
  assert '; +100.00 [+100.00, +100.00] p=' in rouge1 and rouge1.endswith(' on 3 shared'), rouge1
  chart = tmp_path / 'chart.png'
  compare.bar_chart([base, fewer], str(chart), intervals.BootstrapConfig(resamples=100))
  assert chart.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  base_run, fewer_run = compare.load_runs([base, fewer])[0]
  diffs = compare.paired_task_differences(base_run, fewer_run, 'rouge1', intervals.BootstrapConfig(resamples=100))
  assert diffs['demo_support_zs'].num_examples == 3 and diffs['demo_support_zs'].delta == 100.0
  md, _ = compare.side_by_side([base, fewer], str(tmp_path / 'diff'), per_task=5)
  assert 'An unseen target.' not in open(md).read()


def test_one_significance_rule_and_metric_directions():
  cfg = intervals.BootstrapConfig(confidence=0.95)
  diff = lambda low, high, p: intervals.PairedDifference(0, 1, 1, low, high, p, 10)
  assert intervals.significant(diff(0.1, 2, 0.01), cfg)
  assert not intervals.significant(diff(-0.1, 2, 0.01), cfg)  # the interval spans 0
  assert not intervals.significant(diff(0.1, 2, 0.06), cfg)  # p too large
  assert intervals.direction('rougeLsum') == 'higher is better' and intervals.direction('loss') == 'lower is better'
  assert intervals.direction('validation_loss') == 'lower is better'

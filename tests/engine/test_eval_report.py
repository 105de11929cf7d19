"""results.md says what its columns mean: truncated inputs and targets, rank classification metrics."""
from flan_t5x import evaluation


def _result(rank: bool) -> dict:
  result = {'num_examples': 4, 'truncated_inputs': 1, 'truncated_targets': 2, 'metrics': {'accuracy': 50.0},
            'by_template': {'0': {'num_examples': 4, 'metrics': {'accuracy': 50.0}}}}
  if rank:
    result['rank_classification'] = {'accuracy': 75.0, 'mae': 0.25}
    result['by_template']['0']['rank_classification'] = {'accuracy': 75.0, 'mae': 0.25}
  return result


def test_report_has_both_truncation_columns_and_explains_rank_metrics():
  report = evaluation.markdown_report({'reviews': _result(rank=True)}, 'ckpt (step 3)')
  lines = report.splitlines()
  assert lines[1] == '| task | examples | truncated inputs | truncated targets | accuracy | rank accuracy | rank mae |'
  assert lines[3] == '| reviews | 4 | 1 | 2 | 50.00 | 75.00 | 0.25 |'
  assert 'truncated inputs / targets: examples whose input was cut' in report
  assert 'rank <metric>: the metric when the prediction is the answer option' in report
  assert 'rank <metric>' not in evaluation.markdown_report({'summaries': _result(rank=False)})

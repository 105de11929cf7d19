"""Eval, infer and compare jobs on a tiny random checkpoint; ROUGE against rouge-score; gin entry points."""

import glob
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio
from rouge_score import rouge_scorer

from flan_t5x import checkpoint_import
from flan_t5x import compare
from flan_t5x import decoding
from flan_t5x import eval as eval_lib
from flan_t5x import evaluation
from flan_t5x import infer as infer_lib
from flan_t5x import partitioning

import helpers

flan_tasks = pytest.importorskip('flan_tasks')
LENGTHS = {'inputs': 128, 'targets': 12}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
  model = helpers.tiny_model()
  params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), 1, 8, 8))
  path = checkpoint_import.save_params_checkpoint(jax.tree.map(np.asarray, params),
                                                  str(tmp_path_factory.mktemp('ckpt')), step=3)
  return model, params, path


def _partitioner():
  return partitioning.PjitPartitioner(devices=jax.devices()[:1])


def test_rouge_metrics_equal_rouge_score():
  task = seqio.get_mixture_or_task('demo_support_zs')
  targets = ['Ines will get a refund. The book is broken.', 'Tom asks for help with his order.']
  predictions = ['Ines gets a refund for the book.', 'Tom wants help. His order is late.']
  got = evaluation.compute_metrics(task, targets, predictions)
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeLsum'], use_stemmer=True)
  split = lambda s: s.replace('. ', '.\n')
  scores = [scorer.score(split(t), split(p)) for t, p in zip(targets, predictions)]
  for name in ('rouge1', 'rouge2', 'rougeLsum'):
    assert got[name] == pytest.approx(100 * np.mean([s[name].fmeasure for s in scores]), abs=1e-9)
  assert got['rouge1'] > 0


def test_eval_job_writes_outputs(checkpoint, tmp_path):
  model, _, path = checkpoint
  out = tmp_path / 'eval'
  results = eval_lib.evaluate(model=model, checkpoint_path=path, output_dir=str(out),
                              mixture_or_task_name='demo_heldout', task_feature_lengths=LENGTHS,
                              batch_size=4, max_examples=6, partitioner=_partitioner())
  assert set(results) == {'demo_support_zs', 'demo_support_fs', 'demo_restaurant_zs', 'demo_restaurant_fs'}
  support = json.loads((out / 'demo_support_zs.json').read_text())
  assert support['step'] == 3 and support['num_examples'] == 6
  assert set(support['metrics']) == {'rouge1', 'rouge2', 'rougeLsum'}
  assert support['truncated_inputs'] > 0  # demo dialogues are longer than 128 bytes
  assert sum(t['num_examples'] for t in support['by_template'].values()) == 6
  restaurant = json.loads((out / 'demo_restaurant_zs.json').read_text())
  assert {'accuracy', 'mae'} <= set(restaurant['rank_classification'])
  lines = (out / 'demo_support_zs-predictions.jsonl').read_text().splitlines()
  assert len(lines) == 6 and {'input', 'target', 'prediction'} <= set(json.loads(lines[0]))
  markdown = (out / 'results.md').read_text()
  assert '| demo_support_zs | 6 |' in markdown and 'rouge1' in markdown and 'By template' in markdown
  assert 'bootstrap intervals (1000 resamples' in markdown
  interval = support['intervals']['metrics']['rouge1']
  assert interval['low'] <= support['metrics']['rouge1'] <= interval['high'] and interval['num_examples'] == 6
  assert support['bootstrap']['seed'] == 0 and support['requested_examples'] == 6
  assert isinstance(support['flags'], list)
  assert {'scored_target', 'scored_prediction'} <= set(json.loads(lines[0]))
  assert glob.glob(str(out / 'inference_eval' / 'events.out.tfevents.*'))
  # T5X's files (seqio.JSONLogger's layout), read back: the same metrics and predictions.
  t5x_metrics = [json.loads(l) for l in (out / 'inference_eval' / 'demo_support_zs-metrics.jsonl').read_text().splitlines()]
  assert t5x_metrics == [{'step': 3, **support['metrics']}]
  t5x_lines = [json.loads(l) for l in (out / 'inference_eval' / 'demo_support_zs-000003.jsonl').read_text().splitlines()]
  records = [json.loads(l) for l in lines]
  assert [l['prediction'] for l in t5x_lines] == [r['scored_prediction'] for r in records]
  assert [l['input']['inputs_pretokenized'] for l in t5x_lines] == [r['input'] for r in records]
  assert support['decoding']['method'] == 'beam'  # T5X's default decode_fn
  report = compare.compare([str(out), str(out)])
  assert '### demo_support_zs' in report and '; +0.00 [+0.00, +0.00] p=1.000' in report
  compare.bar_chart([str(out), str(out)], str(tmp_path / 'chart.png'))  # matplotlib is a dependency
  assert (tmp_path / 'chart.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_eval_predictions_are_the_decoder_output(checkpoint, tmp_path):
  model, params, path = checkpoint
  eval_lib.evaluate(model=model, checkpoint_path=path, output_dir=str(tmp_path), mixture_or_task_name='demo_support_zs',
                    task_feature_lengths=LENGTHS, batch_size=3, max_examples=3, partitioner=_partitioner())
  task = seqio.get_mixture_or_task('demo_support_zs')
  examples = evaluation.load_examples(task, 'validation', 3)
  inputs = np.stack([np.pad(e.inputs[:127] + [1] if len(e.inputs) > 128 else e.inputs,
                            (0, 128 - min(len(e.inputs), 128))) for e in examples]).astype(np.int32)
  # No DecodingConfig given: the model's decode_fn, T5X's default (beam search, one beam, alpha 0.6).
  assert model.decoding_config() == decoding.DecodingConfig('beam', 1, alpha=0.6)
  tokens, _ = decoding.make_predict_fn(model.module, 12, model.decoding_config())(params, inputs,
                                                                                jax.random.PRNGKey(0))
  expected = [task.output_features['targets'].vocabulary.decode(decoding.strip_after_eos(t[0])) for t in tokens]
  records = [json.loads(l) for l in (tmp_path / 'demo_support_zs-predictions.jsonl').read_text().splitlines()]
  assert [r['prediction'] for r in records] == expected


def _write_inputs(path, n):
  with open(path, 'w') as f:
    for i in range(n):
      f.write(json.dumps({'text': f'copy: alpha beta {i}'}) + '\n')


def _infer(model, params, inputs, out, **kwargs):
  return infer_lib.infer(model=model, checkpoint_path=None, output_dir=str(out), input_path=str(inputs),
                         input_field='text', chunk_size=2, batch_size=2, input_length=32, max_decode_length=6,
                         partitioner=_partitioner(), params=params, **kwargs)


def test_killed_infer_job_resumes_without_duplicates(checkpoint, tmp_path):
  model, params, _ = checkpoint
  inputs = tmp_path / 'in.jsonl'
  _write_inputs(inputs, 7)
  full = _infer(model, params, inputs, tmp_path / 'full')
  expected = open(full).read().splitlines()
  assert [json.loads(l)['index'] for l in expected] == list(range(7))

  out = tmp_path / 'resumed'
  assert _infer(model, params, inputs, out, max_chunks=2) is None  # "killed" after 2 of 4 chunks
  host_dir = out / 'host-00000-of-00001'
  assert sorted(p.name for p in host_dir.glob('chunk-*.done')) == ['chunk-00000.done', 'chunk-00001.done']
  (host_dir / 'chunk-00002.jsonl').write_text('{"partial": true}\n')  # died while writing chunk 2
  (host_dir / 'chunk-00002.done.tmpk3x9_q').write_text('{"lines"')  # ... or its marker (atomic write's temp)
  resumed = _infer(model, params, inputs, out)
  assert open(resumed).read().splitlines() == expected
  assert not list(host_dir.glob('*.tmp*'))  # the interrupted write's temporary file is gone


def test_infer_rejects_a_different_job_in_the_same_dir(checkpoint, tmp_path):
  model, params, _ = checkpoint
  inputs = tmp_path / 'in.jsonl'
  _write_inputs(inputs, 3)
  _infer(model, params, inputs, tmp_path / 'out')
  _write_inputs(inputs, 5)
  with pytest.raises(ValueError, match='different job'):
    _infer(model, params, inputs, tmp_path / 'out')
  with pytest.raises(ValueError, match="string field 'inputs'"):
    infer_lib.read_jsonl_inputs(str(inputs), 'inputs')


@pytest.mark.parametrize('content', ['', '\n  \n'])
def test_infer_on_an_empty_input_file_is_an_error_before_any_work(checkpoint, tmp_path, content):
  model, params, _ = checkpoint
  inputs = tmp_path / 'in.jsonl'
  inputs.write_text(content)
  with pytest.raises(ValueError, match=rf"{inputs}: no inputs \(the file has no non-empty line\)"):
    _infer(model, params, inputs, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()  # no predictions file that would look like a finished job


def test_a_refused_infer_leaves_nothing_and_the_corrected_command_runs(checkpoint, tmp_path):
  model, params, path = checkpoint
  inputs = tmp_path / 'in.jsonl'
  _write_inputs(inputs, 3)
  other = helpers.tiny_model(mlp_dim=model.config.mlp_dim * 2)  # not the checkpoint's model
  run = lambda m: infer_lib.infer(model=m, checkpoint_path=path, output_dir=str(tmp_path / 'out'),
                                  input_path=str(inputs), input_field='text', chunk_size=2, batch_size=2,
                                  input_length=32, max_decode_length=6, partitioner=_partitioner())
  with pytest.raises(Exception, match='mlp'):
    run(other)
  assert not (tmp_path / 'out').exists()  # no manifest that would refuse the corrected command
  predictions = run(model)
  assert len(open(predictions).read().splitlines()) == 3


def test_training_logs_inference_eval(tmp_path):
  cfg = evaluation.InferenceEvalConfig('demo_restaurant_zs', task_feature_lengths=LENGTHS, batch_size=4,
                                     max_examples=4, rank_classification=False)
  helpers.run_training(tmp_path, total_steps=2, eval_period=2, inference_eval_cfg=cfg)
  assert glob.glob(str(tmp_path / 'inference_eval' / 'events.out.tfevents.*'))


def test_infer_on_a_task_also_writes_t5x_layout(checkpoint, tmp_path):
  model, params, _ = checkpoint
  path = infer_lib.infer(model=model, checkpoint_path=None, output_dir=str(tmp_path), params=params,
                         mixture_or_task_name='demo_support_zs', max_examples=3, chunk_size=2, batch_size=2,
                         input_length=64, max_decode_length=6, partitioner=_partitioner())
  ours = [json.loads(l) for l in open(path).read().splitlines()]
  t5x_file = tmp_path / 'demo_support_zs-predict.jsonl-00000-of-00001'
  theirs = [json.loads(l) for l in t5x_file.read_text().splitlines()]
  assert [t['prediction'] for t in theirs] == [r['prediction'] for r in ours] and len(theirs) == 3
  assert theirs[0]['inputs'] == {'inputs_pretokenized': ours[0]['input'], 'targets_pretokenized': ours[0]['target']}
  assert (tmp_path / 'demo_support_zs-predict.jsonl-00000-of-00001.COMPLETED').exists()

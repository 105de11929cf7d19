"""End to end on real data (skipped without ../shared): train a tiny T5-vocabulary model on
dialogsum_zs for a few steps, then evaluate ROUGE on 50 validation dialogues."""

import json
import os

import pytest

from flan_t5x import eval as eval_lib
from flan_t5x import models
from flan_t5x import network
from flan_t5x import optimizers
from flan_t5x import partitioning

import helpers

SHARED = os.path.join(os.path.dirname(helpers.__file__), '..', '..', '..', 'shared')
DATA_DIR = os.path.abspath(os.path.join(SHARED, 'datasets'))
VOCAB_PATH = os.path.abspath(os.path.join(SHARED, 'checkpoints', 't5-spiece', 'spiece.model'))

pytestmark = pytest.mark.skipif(not (os.path.isdir(os.path.join(DATA_DIR, 'dialogsum')) and
                                     os.path.exists(VOCAB_PATH)), reason='needs ../shared datasets and spiece')


@pytest.fixture
def configured():
  flan_tasks = pytest.importorskip('flan_tasks')
  flan_tasks.configure(data_dir=DATA_DIR, vocab_path=VOCAB_PATH)
  yield flan_tasks
  from flan_tasks import config  # pylint: disable=g-import-not-at-top
  config.reset()


def test_train_then_eval_rouge_on_dialogsum(tmp_path, configured):
  import jax  # pylint: disable=g-import-not-at-top
  vocab = configured.t5_vocabulary()
  model = models.EncoderDecoderModel(
      network.Transformer(helpers.tiny_config(vocab_size=32128, emb_dim=32, mlp_dim=64)),
      input_vocabulary=vocab, output_vocabulary=vocab, optimizer_def=optimizers.Adafactor(),
      loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  lengths = {'inputs': 256, 'targets': 32}
  helpers.run_training(tmp_path / 'model', total_steps=3, model=model, task='dialogsum_zs', lengths=lengths,
                       period=3)
  out = tmp_path / 'eval'
  results = eval_lib.evaluate(model=model, checkpoint_path=str(tmp_path / 'model'), output_dir=str(out),
                              mixture_or_task_name='dialogsum_zs', task_feature_lengths=lengths,
                              batch_size=25, max_examples=50,
                              partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]))
  result = json.loads((out / 'dialogsum_zs.json').read_text())
  assert result['step'] == 3 and result['num_examples'] == 50
  assert set(result['metrics']) == {'rouge1', 'rouge2', 'rougeLsum'}
  assert all(0.0 <= v <= 100.0 for v in result['metrics'].values())
  assert result['metrics'] == results['dialogsum_zs']['metrics']
  records = [json.loads(l) for l in (out / 'dialogsum_zs-predictions.jsonl').read_text().splitlines()]
  assert len(records) == 50 and all(r['target'] for r in records)
  assert 0 <= result['truncated_inputs'] <= 50

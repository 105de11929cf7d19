"""Every T5X binding in gin/README.md's table parses on flan_t5x, or fails in one line with its reason,
in the one-line and the block form."""
import pytest

import t5x_binding_table

ROWS = t5x_binding_table.read_table()


def test_the_table_covers_t5x_files_and_the_bindings_users_set():
  assert len(ROWS) > 150
  bindings = {row['binding'].split('=')[0].strip().split('/')[-1] for row in ROWS}
  for name in ('utils.RestoreCheckpointConfig.mode', 'utils.SaveCheckpointConfig.period', 'seqio.Evaluator.num_examples',
               'models.EncoderDecoderModel.predict_batch_with_aux.num_decodes', 'trainer.TerminateOnNanAction.task',
               'optimizers.chain.transformations', 'utils.DatasetConfig.use_custom_packing_ops'):
    assert name in bindings, name


@pytest.mark.parametrize('row', ROWS, ids=[f"{r['source']}:{r['binding'][:60]}" for r in ROWS])
def test_binding_is_honoured_or_refused_in_one_line(row):
  for form in t5x_binding_table.binding_forms(row['binding']):
    message = t5x_binding_table.parse(row, form)
    if row['status'] == 'honoured':
      assert message is None, (form, message)
    else:
      assert message is not None and '\n' not in message, (form, message)
      assert message.endswith(row['note'].replace('\\|', '|')), (form, message, row['note'])

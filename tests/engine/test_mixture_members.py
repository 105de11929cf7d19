"""flan_t5x's evaluation and training see a flan mixture's member set (tasks with data) as SeqIO does."""
import shutil

import seqio

import flan_tasks  # noqa: F401  (registers the mixtures)
from flan_t5x import data
from flan_t5x import evaluation


def test_evaluation_and_training_use_the_members_of_the_mixture(flan_data_dir):
  shutil.rmtree(flan_data_dir / "conll2003")
  shutil.rmtree(flan_data_dir / "wikiann")
  for name in ("flan_mix", "flan_heldout"):
    members = [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(name))]
    assert [t.name for t in evaluation.tasks_of(name)] == members
    assert not any(m.startswith(("conll2003", "wikiann")) for m in members)
  cfg = data.DatasetConfig(mixture_or_task_name="flan_mix", task_feature_lengths={"inputs": 256, "targets": 64},
                           split="validation", batch_size=4, shuffle=False, seed=0, pack=False)
  assert data.has_split(cfg)
  converter = seqio.EncDecFeatureConverter(pack=False)
  batch = next(iter(data.get_dataset(cfg, converter, seed=0, num_epochs=1).as_numpy_iterator()))
  assert batch["encoder_input_tokens"].shape == (4, 256)

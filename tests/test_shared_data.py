"""Built-in tasks on the real datasets in ../shared/datasets (skipped when ../shared is absent)."""
import pytest
import seqio

import flan_tasks
from flan_tasks import config
from tests.conftest import SHARED_DATASETS, SHARED_SPIECE

pytestmark = pytest.mark.skipif(not (SHARED_DATASETS.is_dir() and SHARED_SPIECE.is_file()),
                                reason="../shared datasets and vocabulary not present")

# (task, split, expected examples): counts from each dataset's README, less documented filters.
EXPECTED = [
    ("samsum_zs", "train", 14_732 - 1),  # one empty dialogue
    ("samsum_zs", "validation", 818),
    ("dialogsum_zs", "train", 12_460),
    ("dialogsum_zs", "validation", 500),
    ("conll2003_zs", "train", 14_041),
    ("conll2003_zs", "validation", 3_250),
    ("code_java2cs_zs", "train", 10_295),
    ("code_cs2java_zs", "validation", 499),
    ("clothing_reviews_zs", "train", 18_788 - 663),  # empty review text
    ("clothing_reviews_zs", "validation", 2_349 - 90),
]


@pytest.fixture(autouse=True)
def shared_config():
  config.configure(data_dir=str(SHARED_DATASETS), vocab_path=str(SHARED_SPIECE))
  yield
  config.reset()


@pytest.mark.parametrize("task,split,count", EXPECTED)
def test_reads_real_files(task, split, count):
  provider = seqio.get_mixture_or_task(task)
  assert provider.num_input_examples(split) == count
  fs_task = task.replace("_zs", "_fs")
  for name in (task, fs_task):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 1024, "targets": 256}, split=split, shuffle=True, seed=1, num_epochs=1)
    examples = list(ds.take(300 if name == task else 20).as_numpy_iterator())
    assert len(examples) == (300 if name == task else 20)
    for ex in examples:
      assert ex["inputs_pretokenized"] and ex["targets_pretokenized"]
      assert ex["targets"][-1] == 1


def test_real_vocabulary_size():
  vocabulary = seqio.get_mixture_or_task("dialogsum_zs").output_features["targets"].vocabulary
  assert vocabulary.vocab_size == 32_100


def test_flan_mix_rates_on_real_data():
  rates = flan_tasks.mixture_rates("flan_mix")
  # Samsum's 14,731 dialogues are shared by its zero-shot and few-shot tasks.
  assert rates["samsum_zs"] == pytest.approx(14_731 / 2)
  assert "dialogsum_zs" not in rates

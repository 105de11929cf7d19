"""Every registered task and mixture through the real SeqIO pipeline on hand-written raw examples."""
import pytest
import seqio

import flan_tasks
from flan_tasks import registry

LENGTHS = {"inputs": 512, "targets": 128}
FLAN_TASKS = sorted(i.name for i in registry.all_task_info() if i.group == "flan")
DEMO_TASKS = sorted(i.name for i in registry.all_task_info() if i.group == "demo")


def _read(name, split="train", n=50, lengths=LENGTHS):
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False, num_epochs=1)
  return list(ds.take(n).as_numpy_iterator())


def _check_task_examples(name, examples):
  task = seqio.get_mixture_or_task(name)
  info = flan_tasks.task_info(name)
  assert examples, name
  vocabulary = task.output_features["targets"].vocabulary
  targets, predictions = [], []
  for ex in examples:
    assert ex["_task_name"].decode() == name
    assert 0 <= ex["_template_idx"] < info.num_templates
    assert ex["_template_type"].decode().startswith(info.variant)
    inputs_text = ex["inputs_pretokenized"].decode()
    targets_text = ex["targets_pretokenized"].decode()
    assert inputs_text and targets_text
    # Tokenized with EOS, within the lengths, decoding back to the text (up to trimming).
    assert ex["targets"][-1] == 1 and len(ex["targets"]) <= LENGTHS["targets"]
    assert len(ex["inputs"]) <= LENGTHS["inputs"]
    decoded = vocabulary.decode(ex["targets"].tolist())
    assert " ".join(decoded.split()) == " ".join(targets_text.split())[:len(" ".join(decoded.split()))]
    targets.append(task.postprocess_fn(decoded, example=ex, is_target=True))
    predictions.append(task.postprocess_fn(decoded, example=ex, is_target=False))
  # A model that outputs the targets scores perfectly on every metric of the task.
  for metric_fn in task.metric_fns:
    for key, value in metric_fn(targets, predictions).items():
      expected = 0.0 if key == "mae" else 100.0
      assert value == pytest.approx(expected), (name, key, value)
  return targets


@pytest.mark.parametrize("name", FLAN_TASKS)
def test_flan_task_pipeline(name, flan_data_dir):
  del flan_data_dir
  for split in ("train", "validation"):
    examples = _read(name, split)
    _check_task_examples(name, examples)


@pytest.mark.parametrize("name", DEMO_TASKS)
def test_demo_task_pipeline(name):
  examples = _read(name, "validation", n=20, lengths={"inputs": 512, "targets": 128})
  _check_task_examples(name, examples)


def test_flan_task_content_from_files(flan_data_dir):
  del flan_data_dir
  samsum = _read("samsum_zs")
  assert "Amanda: I baked cookies." in samsum[0]["inputs_pretokenized"].decode()
  assert samsum[0]["targets_pretokenized"].decode() == (
      "Amanda baked cookies and will bring Jerry some tomorrow.")
  inversion = _read("samsum_inv_zs")[0]
  assert "Amanda baked cookies" in inversion["inputs_pretokenized"].decode()
  assert inversion["targets_pretokenized"].decode().startswith("Amanda: I baked cookies.")
  conll = [ex["targets_pretokenized"].decode() for ex in _read("conll2003_zs")]
  assert conll[:3] == ["organization: EU; miscellaneous: German",
                       "person: Peter Blackburn; location: London", "location: BRUSSELS"]
  assert "none" in conll  # a sentence without entities still becomes an example
  # Code: the braces T5's vocabulary lacks are escaped in the text, and the postprocessor undoes it.
  code = _read("code_java2cs_zs")[0]
  assert "public int size() &#123; return count; &#125;" in code["inputs_pretokenized"].decode()
  assert "Java" in code["inputs_pretokenized"].decode()
  assert code["targets_pretokenized"].decode() == "public int Size() &#123; return count; &#125;"
  postprocess = seqio.get_mixture_or_task("code_java2cs_zs").postprocess_fn
  assert postprocess(code["targets_pretokenized"].decode(), example=code, is_target=True) == (
      "public int Size() { return count; }")
  reverse = _read("code_cs2java_zs")[0]
  assert reverse["targets_pretokenized"].decode() == "public int size() &#123; return count; &#125;"
  ratings = [ex["targets_pretokenized"].decode() for ex in _read("clothing_reviews_zs")]
  assert ratings == ["5", "2", "3", "4", "1"]  # the row with empty review text is dropped, by rule
  clothing = _read("clothing_reviews_zs")[0]["inputs_pretokenized"].decode()
  assert "Love this dress. Absolutely wonderful" in clothing


def test_mixtures_cover_their_tasks_and_never_overlap(flan_data_dir):
  del flan_data_dir
  mix = {t.name for t in seqio.get_mixture_or_task("flan_mix").tasks}
  heldout = {t.name for t in seqio.get_mixture_or_task("flan_heldout").tasks}
  assert not mix & heldout
  assert {"dialogsum_zs", "dialogsum_fs", "xsum_zs", "amazon_reviews_zs", "wikiann_zs",
          "code_cs2java_zs"} <= heldout
  assert {"samsum_zs", "samsum_fs", "samsum_inv_zs", "cnn_dailymail_zs", "clothing_reviews_zs",
          "conll2003_zs", "code_java2cs_zs"} <= mix
  assert mix | heldout == set(FLAN_TASKS)
  held_datasets = {flan_tasks.task_info(t).dataset for t in heldout}
  assert not held_datasets & {flan_tasks.task_info(t).dataset for t in mix}
  # One held-out dataset per family, DialogSum among them.
  assert "dialogsum" in held_datasets
  assert {flan_tasks.task_info(t).family for t in heldout} == {
      "dialogue_summarization", "news_summarization", "review_rating", "named_entity_recognition",
      "code_translation"}


@pytest.mark.parametrize("mixture", ["flan_mix", "flan_heldout"])
def test_flan_mixtures_read_through_seqio(mixture, flan_data_dir):
  del flan_data_dir
  ds = seqio.get_mixture_or_task(mixture).get_dataset(
      LENGTHS, split="train", shuffle=True, seed=3, num_epochs=1,
      passthrough_features=list(flan_tasks.METADATA_FEATURES))
  names = {ex["_task_name"].decode() for ex in ds.take(80).as_numpy_iterator()}
  members = {t.name for t in seqio.get_mixture_or_task(mixture).tasks}
  assert names <= members and len(names) >= 3


@pytest.mark.parametrize("mixture", ["demo_mix", "demo_heldout"])
def test_demo_mixtures_read_through_seqio(mixture):
  ds = seqio.get_mixture_or_task(mixture).get_dataset(
      {"inputs": 256, "targets": 64}, split="train", shuffle=True, seed=0, num_epochs=1)
  examples = list(ds.take(16).as_numpy_iterator())
  assert len(examples) == 16
  assert all(ex["targets"][-1] == 1 for ex in examples)


def test_mixture_rates_are_examples_proportional_with_cap(flan_data_dir):
  del flan_data_dir
  rates = flan_tasks.mixture_rates("flan_mix")
  # 5 dialogues, shared between samsum_zs and samsum_fs: 2.5 each.
  assert rates["samsum_zs"] == pytest.approx(2.5)
  assert rates["clothing_reviews_zs"] == pytest.approx(2.5)  # 5 usable rows of 6
  assert rates["conll2003_fs"] == pytest.approx(2.5)
  flan_tasks.add_mixture("capped_mix", ["samsum_zs", "conll2003_zs"], maximum=3, temperature=2.0)
  capped = flan_tasks.mixture_rates("capped_mix")
  assert capped["samsum_zs"] == pytest.approx(3 ** 0.5)
  with pytest.raises(ValueError, match="unknown task"):
    flan_tasks.add_mixture("bad_mix", ["samsum_zs", "no_such_task"])


def test_demo_data_is_deterministic():
  from flan_tasks import demo_data
  first = demo_data.generate("demo_dialogue", "train")
  assert first == demo_data.generate("demo_dialogue", "train")
  assert len(first["dialogue"]) == demo_data.SPLIT_SIZES["train"]
  assert first != demo_data.generate("demo_dialogue", "validation")


@pytest.mark.slow
def test_same_seed_same_order():
  def order(seed):
    ds = seqio.get_mixture_or_task("demo_mix").get_dataset(
        {"inputs": 256, "targets": 64}, split="train", shuffle=True, seed=seed, num_epochs=1)
    return [ex["targets"].tobytes() for ex in ds.take(12).as_numpy_iterator()]
  assert order(5) == order(5)
  assert order(5) != order(6)


def test_missing_data_says_how_to_provide_it(no_flan_data):
  del no_flan_data
  with pytest.raises(flan_tasks.DataNotFoundError) as err:
    _read("samsum_zs")
  message = str(err.value)
  assert "FLAN_DATA_DIR" in message and "samsum/train.json" in message
  assert "tfds build samsum" in message and "FLAN_TFDS_DATA_DIR" in message
  with pytest.raises(flan_tasks.DataNotFoundError, match="dialogsum/dialogsum.train.jsonl"):
    _read("dialogsum_zs")

"""Zero-shot and few-shot formatting on hand-written examples."""
import collections

import pytest
import seqio
import tensorflow as tf

from flan_tasks import formatting, templates
from flan_tasks.templates import FewShotPattern

TEMPLATES = (("Summarize: {dialogue}", "{summary}"), ("{dialogue}\nTL;DR:", "{summary}"),
             ("Chat: {dialogue} {options_}", "{summary}"))
ROWS = {"dialogue": [f"A: hello {i}\nB: hi {i}" for i in range(40)],
        "summary": [f"They greet {i}." for i in range(40)]}


def _dataset():
  return tf.data.Dataset.from_tensor_slices(ROWS)


def _zero_shot(**kwargs):
  kwargs.setdefault("options", ("yes", "no"))
  ds = formatting.zero_shot(_dataset(), task_name="t_zs", templates=TEMPLATES, **kwargs)
  return list(ds.as_numpy_iterator())


def test_zero_shot_template_draw_is_deterministic_and_uses_all_templates():
  first, again = _zero_shot(seed=0), _zero_shot(seed=0)
  assert [e["_template_idx"] for e in first] == [e["_template_idx"] for e in again]
  assert set(e["_template_idx"] for e in first) == {0, 1, 2}
  other_seed = _zero_shot(seed=1)
  assert [e["_template_idx"] for e in first] != [e["_template_idx"] for e in other_seed]
  # The draw depends on the example, not on its position: reversing the data keeps each choice.
  reversed_ds = formatting.zero_shot(_dataset().apply(lambda d: d.skip(20)), task_name="t",
                                     templates=TEMPLATES, options=("yes", "no"))
  assert [e["_template_idx"] for e in reversed_ds.as_numpy_iterator()] == [
      e["_template_idx"] for e in first[20:]]


def test_zero_shot_fills_fields_options_and_metadata():
  examples = _zero_shot(template_idx=2)
  ex = examples[3]
  assert ex["inputs"].decode() == "Chat: A: hello 3\nB: hi 3 OPTIONS:\n- yes\n- no"
  assert ex["targets"].decode() == "They greet 3."
  assert ex["_template_idx"] == 2 and ex["_template_type"] == b"zs_opt"
  assert ex["_task_name"] == b"t_zs" and ex["_num_shots"] == 0
  assert _zero_shot(template_idx=1)[0]["_template_type"] == b"zs"
  with pytest.raises(ValueError, match="out of range"):
    _zero_shot(template_idx=3)


def test_options_text():
  assert formatting.options_text(["1", "2"]) == "OPTIONS:\n- 1\n- 2"


def test_check_templates_names_template_and_missing_field():
  with pytest.raises(ValueError, match=r"input template #1 .* uses field \{speaker\}"):
    formatting.check_templates("my_task", [("{dialogue}", "{summary}"), ("{speaker}", "{summary}")],
                               ["dialogue", "summary"], has_options=False)
  with pytest.raises(ValueError, match="options"):
    formatting.check_templates("my_task", [("{dialogue} {options_}", "{summary}")],
                               ["dialogue", "summary"], has_options=False)


def _few_shot(num_shots, **kwargs):
  pattern = FewShotPattern("Q: ", "A: ", "\n", "\n\n", final_suffix="")
  ds = formatting.few_shot(_dataset(), task_name="t_fs", templates=TEMPLATES[:2],
                           patterns=(pattern,), num_shots=num_shots, **kwargs)
  return list(ds.as_numpy_iterator())


def test_few_shot_exemplars_come_from_other_examples_with_the_same_template():
  examples = _few_shot(2, template_idx=0)
  ex = examples[5]
  assert ex["inputs"].decode() == (
      "Q: Summarize: A: hello 6\nB: hi 6\nA: They greet 6.\n\n"
      "Q: Summarize: A: hello 7\nB: hi 7\nA: They greet 7.\n\n"
      "Q: Summarize: A: hello 5\nB: hi 5\nA: ")
  assert ex["targets"].decode() == "They greet 5."
  assert ex["_num_shots"] == 2 and ex["_template_type"] == b"fs"
  # The last example cycles to the start of the split.
  assert "hello 0" in examples[-1]["inputs"].decode()
  assert len(examples) == 40


def test_few_shot_zero_shots_is_the_pattern_alone():
  ex = _few_shot(0, template_idx=1)[0]
  assert ex["inputs"].decode() == "Q: A: hello 0\nB: hi 0\nTL;DR:\nA: "
  assert ex["_num_shots"] == 0


def test_few_shot_respects_token_budget():
  vocabulary = seqio.ByteVocabulary()
  features = {"inputs": seqio.Feature(vocabulary)}
  query_bytes = len("Q: Summarize: A: hello 5\nB: hi 5\nA: ") + 1  # + EOS
  block_bytes = len("Q: Summarize: A: hello 6\nB: hi 6\nA: They greet 6.\n\n")
  for budget, expected_shots in ((query_bytes, 0), (query_bytes + block_bytes, 1),
                                 (query_bytes + 2 * block_bytes, 2), (10_000, 3)):
    pattern = FewShotPattern("Q: ", "A: ", "\n", "\n\n")
    ds = formatting.few_shot(_dataset(), {"inputs": budget}, features, task_name="t",
                             templates=TEMPLATES[:1], patterns=(pattern,), num_shots=3)
    ex = list(ds.skip(5).take(1).as_numpy_iterator())[0]
    assert ex["_num_shots"] == expected_shots, budget
    assert len(ex["inputs"]) + 1 <= budget or expected_shots == 0
    assert ex["inputs"].decode().endswith("Q: Summarize: A: hello 5\nB: hi 5\nA: ")


def test_few_shot_rejects_bad_shot_counts():
  with pytest.raises(ValueError, match="0..5"):
    _few_shot(6)


def test_template_families_have_enough_templates_and_the_named_ones():
  for name in templates.family_names():
    family = templates.get_family(name)
    assert len(family.templates) >= 10, name
    assert family.few_shot_patterns, name
    for inputs_template, targets_template in family.templates:
      assert templates.placeholders(inputs_template) and templates.placeholders(targets_template)
  dialogue_inputs = [t for t, _ in templates.get_family("dialogue_summarization").templates]
  for phrase in ("Briefly summarize that dialogue.", "What is a summary of this dialogue?",
                 "What was going on in that conversation?"):
    assert any(phrase in t for t in dialogue_inputs), phrase
  review = [t for t, _ in templates.get_family("review_rating").templates]
  with_options = sum("{options_}" in t for t in review)
  assert 0 < with_options < len(review)
  assert "dialogue_inversion" in templates.family_names()


def test_template_usage_is_spread_over_templates():
  family = templates.get_family("dialogue_summarization")
  ds = tf.data.Dataset.from_tensor_slices({"dialogue": [f"d{i}" for i in range(2000)],
                                           "summary": ["s"] * 2000})
  counts = collections.Counter(
      int(e["_template_idx"]) for e in formatting.zero_shot(
          ds, task_name="x", templates=family.templates).as_numpy_iterator())
  assert len(counts) == len(family.templates)
  assert min(counts.values()) > 2000 / len(family.templates) / 2

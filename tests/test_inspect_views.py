"""flan_tasks.inspect_views on hand-written rows: HTML marking, exemplar boxes, DataFrames, the task table."""
import json

import flan_tasks
from flan_tasks import inspect as inspect_lib, inspect_views, templates


def test_marked_html_marks_template_words_and_escapes_the_rest():
  template = "Summarize this dialogue:\n{dialogue}\nIn one sentence."
  text = "Summarize this dialogue:\nA: <b>hi</b>\nIn one sentence."
  out = inspect_views.marked_html(text, template)
  assert out.count("<mark") == 2 and "&lt;b&gt;hi&lt;/b&gt;" in out
  assert ">Summarize this dialogue:\n</mark>" in out and ">\nIn one sentence.</mark>" in out
  assert inspect_views.marked_html("a <x>", None) == "a &lt;x&gt;"


def test_split_exemplars_finds_each_block_and_the_query():
  pattern = templates.FewShotPattern("Q: ", "A: ", "\n", "\n\n")
  text = "Q: one\nA: 1\n\nQ: two\nA: 2\n\nQ: three\nA: "
  blocks, query = inspect_views.split_exemplars(text, 2, [templates.DEFAULT_FEW_SHOT_PATTERNS[0], pattern])
  assert blocks == ["Q: one\nA: 1\n\n", "Q: two\nA: 2\n\n"] and query == "Q: three\nA: "
  assert inspect_views.split_exemplars(text, 3, [pattern]) == ([], text)  # not 3 exemplars: unsplit
  assert inspect_views.split_exemplars(text, 0, [pattern]) == ([], text)


def _user_summary(tmp_path):
  rows = [{"chat": f"A: question {i} ?\nB: answer {i}.", "summary": f"B answers {i}."} for i in range(6)]
  path = tmp_path / "chats.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  name = flan_tasks.add_instruction_task("view_chats", {"train": str(path), "validation": str(path)}, "chat",
                                         "summary", family="dialogue_summarization",
                                         vocabulary=flan_tasks.demo_vocabulary())
  return inspect_lib.summarize("view_chats_fs", "validation", n=2, sample=6,
                               sequence_length={"inputs": 512, "targets": 16}), name


def test_summary_html_and_frames(tmp_path):
  summary, _ = _user_summary(tmp_path)
  html = summary._repr_html_()
  for heading in ("Formatted examples", "Template usage", "Token lengths before trimming", "Vocabulary"):
    assert heading in html
  assert "<mark" in html and "exemplar 1" in html and "query" in html and "inputs pieces" in html
  lengths = inspect_views.lengths_frame(summary).set_index("feature")
  assert lengths.loc["inputs", "length"] == 512 and lengths.loc["targets", "length"] == 16
  assert lengths.loc["targets", "longer"] == sum(n > 16 for n in summary.token_lengths["targets"])
  assert lengths.loc["inputs", "sampled"] == 6
  vocabulary = inspect_views.vocabulary_frame(summary)
  assert list(vocabulary["task"]) == ["view_chats_fs"] and vocabulary["inputs_unk"].sum() == 0
  assert vocabulary["inputs_tokens"].iloc[0] == sum(summary.token_lengths["inputs"]) - 6  # less the EOS
  examples = inspect_views.examples_frame(summary)
  assert len(examples) == 2 and set(examples["task_name"]) == {"view_chats_fs"}


def test_mixture_rates_frame_and_charts():
  summary = inspect_lib.summarize("demo_heldout", n=1, sample=8, sequence_length={"inputs": 128, "targets": 32})
  rates = inspect_views.rates_frame(summary)
  assert len(rates) == 4 and abs(rates["share"].sum() - 1.0) < 1e-9
  assert "Mixture rates" in summary._repr_html_()
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  assert inspect_views.plot_rates(summary).axes[0].get_title() == "demo_heldout: mixture rates"
  titles = [ax.get_title() for ax in inspect_views.plot_lengths(summary).axes]
  assert titles == [f"inputs: {summary.truncated['inputs']}/8 longer than 128",
                    f"targets: {summary.truncated['targets']}/8 longer than 32"]


def test_task_table_rows(tmp_path):
  _, name = _user_summary(tmp_path)
  table = inspect_views.task_table().to_dataframe().set_index("name")
  row = table.loc[name]
  assert (row["kind"], row["family"], row["shots"], row["role"]) == (
      "task", "dialogue_summarization", "zero-shot", "training")
  assert row["train_examples"] == 6 and row["validation_examples"] == 6 and row["metrics"] == "rouge"
  assert table.loc["demo_support_fs", "role"] == "held-out" and table.loc["demo_support_fs", "shots"] == "few-shot"
  heldout = table.loc["demo_heldout"]
  assert (heldout["kind"], heldout["tasks"], heldout["shots"], heldout["templates"]) == (
      "mixture", 4, "zero-shot + few-shot", "-")
  assert heldout["validation_examples"] == sum(table.loc[t, "validation_examples"] for t in (
      "demo_support_zs", "demo_support_fs", "demo_restaurant_zs", "demo_restaurant_fs"))
  assert not table.isna().any().any() and "None" not in inspect_views.task_table(count_examples=False)._repr_html_()
  assert table.loc["demo_heldout", "role"] == "held-out" and table.loc["demo_mix", "role"] == "training"
  assert "<table>" in inspect_views.task_table(count_examples=False)._repr_html_()


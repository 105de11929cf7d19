"""The user's own files as instruction tasks: Python and gin, file formats, and bad input."""
import json
import logging

import gin
import pytest
import seqio

import flan_tasks
from flan_tasks import readers

LENGTHS = {"inputs": 256, "targets": 64}
CHATS = [{"chat": f"Customer: my order {i} is late\nAgent: it ships tomorrow", "resolution":
          f"Order {i} ships tomorrow.", "stars": 1 + i % 5} for i in range(8)]


def _write_jsonl(path, rows, extra_lines=()):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines),
                  encoding="utf-8")
  return str(path)


def _targets(name, split="train"):
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1)
  return [ex["targets_pretokenized"].decode() for ex in ds.as_numpy_iterator()]


def test_jsonl_with_family(tmp_path):
  path = _write_jsonl(tmp_path / "chats.jsonl", CHATS)
  name = flan_tasks.add_instruction_task(
      "support_chats", {"train": path, "validation": path}, input_field="chat",
      target_field="resolution", family="dialogue_summarization",
      vocabulary=seqio.ByteVocabulary())
  assert name == "support_chats_zs"
  assert "support_chats_fs" in seqio.TaskRegistry.names()
  assert _targets(name, "validation") == [c["resolution"] for c in CHATS]
  ds = seqio.get_mixture_or_task("support_chats_fs").get_dataset(
      {"inputs": 1024, "targets": 64}, split="train", shuffle=False, num_epochs=1)
  first = next(ds.as_numpy_iterator())
  assert first["_num_shots"] == 3 and "order 1 is late" in first["inputs_pretokenized"].decode()
  # The same call again is a no-op; a mixture of user and built-in tasks can be made.
  assert flan_tasks.add_instruction_task(
      "support_chats", {"train": path, "validation": path}, input_field="chat",
      target_field="resolution", family="dialogue_summarization",
      vocabulary=seqio.ByteVocabulary()) == name
  flan_tasks.add_mixture("support_mix", ["support_chats_zs", "support_chats_fs"])
  assert flan_tasks.mixture_rates("support_mix") == {"support_chats_zs": 4.0,
                                                     "support_chats_fs": 4.0}


def test_csv_with_own_templates_and_metrics(tmp_path):
  path = tmp_path / "reviews.csv"
  path.write_text("text,score\n\"Great, fits well\",5\nBad,1\n", encoding="utf-8")
  name = flan_tasks.add_instruction_task(
      "my_reviews", str(path), input_field="text", target_field="score",
      templates=[("Review: {text}\nStars:", "{score}"), ("{text} -> rating?", "{score}")],
      metrics=["rating"], vocabulary=seqio.ByteVocabulary())
  assert _targets(name) == ["5", "1"]
  task = seqio.get_mixture_or_task(name)
  assert task.metric_fns[0].__name__ == "rating_metrics"


def test_placeholder_not_in_fields_fails_at_registration(tmp_path):
  path = _write_jsonl(tmp_path / "x.jsonl", CHATS)
  with pytest.raises(ValueError, match=r"template #0 .*\{speaker\}"):
    flan_tasks.add_instruction_task("bad_templates", path, "chat", "resolution",
                                    templates=[("{speaker}: {chat}", "{resolution}")],
                                    vocabulary=seqio.ByteVocabulary())


def test_malformed_line_names_file_and_line(tmp_path):
  path = _write_jsonl(tmp_path / "broken.jsonl", CHATS[:2], extra_lines=["{not json\n"])
  flan_tasks.add_instruction_task("broken_chats", path, "chat", "resolution",
                                  family="dialogue_summarization",
                                  vocabulary=seqio.ByteVocabulary())
  with pytest.raises(readers.BadRowError, match=r"broken\.jsonl:3: invalid JSON"):
    _targets("broken_chats_zs")


def test_missing_field_names_file_line_and_column(tmp_path):
  rows = CHATS[:2] + [{"chat": "hello"}]
  path = _write_jsonl(tmp_path / "partial.jsonl", rows)
  flan_tasks.add_instruction_task("partial_chats", path, "chat", "resolution",
                                  family="dialogue_summarization",
                                  vocabulary=seqio.ByteVocabulary())
  with pytest.raises(readers.BadRowError, match=r"partial\.jsonl:3: field 'resolution' is missing"):
    _targets("partial_chats_zs")


def test_skip_bad_rows_logs_the_count(tmp_path, caplog):
  rows = CHATS[:3] + [{"chat": "no target"}]
  path = _write_jsonl(tmp_path / "skip.jsonl", rows, extra_lines=["[1, 2]\n", "{oops\n"])
  flan_tasks.add_instruction_task("skip_chats", path, "chat", "resolution",
                                  family="dialogue_summarization", skip_bad_rows=True,
                                  vocabulary=seqio.ByteVocabulary())
  with caplog.at_level(logging.WARNING):
    assert len(_targets("skip_chats_zs")) == 3
  assert "skipped 3 bad rows" in caplog.text


def test_registration_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    flan_tasks.add_instruction_task("x", str(tmp_path / "nope.jsonl"), "a", "b",
                                    family="dialogue_summarization")
  path = _write_jsonl(tmp_path / "x.txt", CHATS)
  with pytest.raises(ValueError, match="file_format"):
    flan_tasks.add_instruction_task("x", path, "chat", "resolution", family="news_summarization")
  with pytest.raises(ValueError, match="exactly one of"):
    flan_tasks.add_instruction_task("x", path, "chat", "resolution")
  with pytest.raises(ValueError, match="unknown family"):
    flan_tasks.add_instruction_task("x", path, "chat", "resolution", family="poetry",
                                    file_format="jsonl")


def test_register_from_gin(tmp_path):
  path = _write_jsonl(tmp_path / "gin_chats.jsonl", CHATS)
  gin.clear_config()
  gin.parse_config(f"""
      import flan_tasks
      flan_tasks.add_instruction_task.name = 'gin_chats'
      flan_tasks.add_instruction_task.source_files = '{path}'
      flan_tasks.add_instruction_task.input_field = 'chat'
      flan_tasks.add_instruction_task.target_field = 'resolution'
      flan_tasks.add_instruction_task.family = 'dialogue_summarization'
      flan_tasks.configure.data_dir = '{tmp_path}'
  """)
  try:
    name = flan_tasks.add_instruction_task(vocabulary=seqio.ByteVocabulary())
    assert name == "gin_chats_zs"
    assert _targets(name)[0] == "Order 0 ships tomorrow."
  finally:
    gin.clear_config()


def test_readers_conll_and_parallel_lines(tmp_path):
  conll = tmp_path / "x.txt"
  conll.write_text("-DOCSTART- -X- -X- O\n\nAnn NNP B-NP B-PER\nlikes VBZ B-VP O\nNew NNP B-NP B-LOC\n"
                   "York NNP I-NP I-LOC\n\nbroken\n", encoding="utf-8")
  rows = list(readers.read_conll(str(conll)))
  assert rows[0].values["tokens"] == ["Ann", "likes", "New", "York"]
  assert readers.format_entities(readers.entities_from_iob(
      rows[0].values["tokens"], rows[0].values["tags"])) == "person: Ann; location: New York"
  with pytest.raises(readers.BadRowError, match=r"x\.txt:8: line 8: expected 'TOKEN"):
    rows[1].check()
  with pytest.raises(readers.BadRowError, match="unknown NER tag 'X-PER'"):
    readers.entities_from_iob(["a"], ["X-PER"])
  a, b = tmp_path / "a.java", tmp_path / "a.cs"
  a.write_text("x\ny\n")
  b.write_text("X\n")
  with pytest.raises(readers.BadRowError, match="parallel files differ in length"):
    list(readers.read_parallel_lines([str(a), str(b)], ["java", "cs"]))


def test_csv_wrong_column_count(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_text("a,b\n1,2\n3\n", encoding="utf-8")
  rows = list(readers.read_delimited(str(path)))
  with pytest.raises(readers.BadRowError, match=r"bad\.csv:3: expected 2 columns"):
    rows[1].check()

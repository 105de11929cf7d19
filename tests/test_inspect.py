"""`python -m flan_tasks.inspect` on a mixture and on a task."""
import subprocess
import sys

from flan_tasks import inspect as inspect_lib


def test_summarize_mixture_in_process():
  lengths = {"inputs": 256, "targets": 64}
  summary = inspect_lib.summarize("demo_mix", n=2, sample=40, sequence_length=lengths)
  assert summary.sampled == 40 and len(summary.examples) == 2
  assert set(summary.rates) == {t for t in summary.rates if t.startswith("demo_")}
  assert abs(sum(summary.rates.values()) - 8000) < 1e-6
  report = inspect_lib.format_report(summary, show_tokens=True, sequence_length=lengths)
  assert "-- mixture rates" in report and "12.50%" in report
  assert "INPUTS:" in report and "input ids" in report and "p50=" in report


def test_cli_on_a_task():
  result = subprocess.run(
      [sys.executable, "-m", "flan_tasks.inspect", "demo_support_zs", "--split", "validation",
       "--n", "1", "--sample", "20", "--inputs_length", "256", "--targets_length", "64"],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "== demo_support_zs (validation)" in result.stdout
  assert "Agent:" in result.stdout and "template usage" in result.stdout


def test_cli_unknown_name_is_a_clear_error():
  result = subprocess.run([sys.executable, "-m", "flan_tasks.inspect", "no_such_task"],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2 and "no_such_task" in result.stderr


# -- truncation label, pieces, vocabulary checks, --file (hand-written rows) ---------------------------
import json  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

CHATS = [{"chat": "Ann: Is the printer fixed ☃?\nBob: Done {since} this morning.",
          "summary": "The printer ☃ was fixed."},
         {"chat": "Cy: Can you send the report?\nDee: By noon.", "summary": "Dee sends it by noon."},
         {"chat": "Eve: My order is late.\nAgent: It ships today.", "summary": "Eve's order ships today."}]


def _write_chats(path, rows=CHATS):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


def test_truncation_is_counted_and_labelled_with_the_lengths_given():
  lengths = {"inputs": 64, "targets": 16}
  summary = inspect_lib.summarize("demo_support_zs", "validation", n=1, sample=20, sequence_length=lengths)
  report = inspect_lib.format_report(summary)
  assert summary.sequence_length == lengths
  line = next(l for l in report.splitlines() if l.startswith("inputs "))
  assert f"longer than 64: {summary.truncated['inputs']}/20" in line and "2048" not in report
  assert summary.truncated["inputs"] == sum(n > 64 for n in summary.token_lengths["inputs"]) > 0
  with pytest.raises(ValueError, match="differs from the lengths"):
    inspect_lib.format_report(summary, sequence_length={"inputs": 2048, "targets": 512})


def test_token_pieces_of_both_vocabularies(tiny_spm):
  import seqio  # pylint: disable=g-import-not-at-top
  assert inspect_lib.token_pieces(seqio.ByteVocabulary(), [3 + ord("h"), 3 + ord("i"), 1]) == ["h", "i", "</s>"]
  vocabulary = seqio.SentencePieceVocabulary(tiny_spm, extra_ids=2)
  ids = vocabulary.encode("Amanda baked cookies")
  pieces = inspect_lib.token_pieces(vocabulary, ids)
  assert "".join(pieces).replace("\u2581", " ").strip() == "Amanda baked cookies"
  assert inspect_lib.token_pieces(vocabulary, [vocabulary.vocab_size - 1])[0].endswith("<extra_id_0>")


def test_cli_file_with_a_sentencepiece_vocabulary(tmp_path, tiny_spm, capsys):
  from flan_tasks import config  # pylint: disable=g-import-not-at-top
  path = _write_chats(tmp_path / "chats.jsonl")
  try:
    code = inspect_lib.main(["--file", str(path), "--input_field", "chat", "--target_field", "summary",
                             "--family", "dialogue_summarization", "--vocab_path", tiny_spm, "--n", "1",
                             "--sample", "3", "--inputs_length", "32", "--targets_length", "16",
                             "--show-tokens"])
  finally:
    config.reset()
  out = capsys.readouterr().out
  assert code == 0, out[-2000:]
  assert "== chats_zs (train) — 3 examples sampled" in out
  assert "input pieces: ['" in out and "\u2581" in out  # SentencePiece pieces, not just ids
  vocab_line = next(l for l in out.splitlines() if l.startswith("chats_zs: <unk>"))
  assert "inputs 1/" in vocab_line and "targets 1/" in vocab_line  # the snowman, once on each side
  assert "cannot encode: '☃' x2" in out  # the tiny vocabulary has no snowman; it has braces
  assert "longer than 32:" in out


def test_cli_file_with_the_byte_vocabulary_and_bad_arguments(tmp_path, capsys):
  path = _write_chats(tmp_path / "my chats.jsonl")
  args = ["--file", str(path), "--input_field", "chat", "--target_field", "summary", "--byte_vocabulary",
          "--n", "1", "--sample", "3", "--inputs_length", "256", "--targets_length", "64"]
  assert inspect_lib.main(args + ["--family", "dialogue_summarization"]) == 0
  out = capsys.readouterr().out
  assert "== my_chats_zs (train)" in out and "inputs 0/" in out and "cannot encode" not in out
  with pytest.raises(SystemExit):
    inspect_lib.main(args)  # no --family
  assert "--file needs --family" in capsys.readouterr().err
  assert inspect_lib.main(args + ["--family", "poetry"]) == 2
  assert "--family 'poetry': expected one of" in capsys.readouterr().err
  bad = _write_chats(tmp_path / "bad.jsonl", CHATS[:1] + [{"chat": "x", "sumary": "y"}])
  assert inspect_lib.main(["--file", str(bad)] + args[2:] + ["--family", "dialogue_summarization"]) == 2
  assert "bad.jsonl:2: field 'summary' is missing" in capsys.readouterr().err
def test_a_dataset_name_gets_did_you_mean(capsys):
  from flan_tasks import inspect as inspect_cli  # pylint: disable=g-import-not-at-top
  assert inspect_cli.main(["dialogsum"]) == 2
  assert "Did you mean dialogsum_fs, dialogsum_zs?" in capsys.readouterr().err


def _readme_inspect_commands() -> list[str]:
  import pathlib  # pylint: disable=g-import-not-at-top
  text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
  section = text[text.index("## flan_tasks in five minutes"):]
  block = section[section.index("```bash\n") + len("```bash\n"):]
  return [line for line in block[:block.index("```")].splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_inspect_commands_run_as_written_on_shared_data(repo_copy):
  """From a copy of the root with ../shared beside it; CPU cost appended: 1 example of 40 sampled."""
  import os  # pylint: disable=g-import-not-at-top
  import shlex  # pylint: disable=g-import-not-at-top
  from tests.conftest import SHARED_DATASETS, SHARED_SPIECE  # pylint: disable=g-import-not-at-top
  if not SHARED_DATASETS.is_dir() or not SHARED_SPIECE.is_file():
    pytest.skip("needs ../shared")
  (repo_copy.parent / "shared").symlink_to(SHARED_DATASETS.parent)
  commands = _readme_inspect_commands()
  assert len(commands) == 2 and "inspect flan_mix" in commands[0], commands
  outputs = {}
  for command in commands:
    words = shlex.split(command)
    env = dict(os.environ, PYTHONPATH=str(repo_copy))
    while "=" in words[0]:
      key, value = words.pop(0).split("=", 1)
      env[key] = value
    argv = [sys.executable if w == "python" else w for w in words] + ["--n", "1", "--sample", "40"]
    done = subprocess.run(argv, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (command, done.stderr[-3000:])
    name = words[words.index("flan_tasks.inspect") + 1]
    assert f"== {name} (train)" in done.stdout, done.stdout[:2000]
    outputs[name] = done.stdout
  assert "left out, data not available here: cnn_dailymail_fs, cnn_dailymail_zs" in outputs["flan_mix"]
  assert "samsum_zs" in outputs["flan_mix"] and "input ids" in outputs["dialogsum_zs"]

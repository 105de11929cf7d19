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


def test_a_dataset_name_gets_did_you_mean(capsys):
  from flan_tasks import inspect as inspect_cli  # pylint: disable=g-import-not-at-top
  assert inspect_cli.main(["dialogsum"]) == 2
  assert "Did you mean dialogsum_fs, dialogsum_zs?" in capsys.readouterr().err

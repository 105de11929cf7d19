"""The README's benchmark smoke commands, as written from a copy of the root, and the machine
record every benchmark JSON carries (bench/hardware.py)."""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import jax
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import hardware  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import thunk_timeline  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def readme_smoke_commands() -> list[str]:
  text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
  start = text.index("Quick smoke runs:")
  return re.findall(r"`(python bench/[^`]+)`", text[start:start + 400])


def test_the_readme_names_both_smoke_commands():
  assert [c.split()[1] for c in readme_smoke_commands()] == ["bench/train_throughput.py",
                                                             "bench/decode_throughput.py"]


def _assert_machine_record(record: dict) -> None:
  cpu = record["cpu"]
  assert cpu["model_name"] and isinstance(cpu["simd_flags"], list)
  assert record["cpu_count"] == os.cpu_count() and record["memory_gib"] > 0
  assert record["xla_matmul_peak_flops"] > 1e8  # any real CPU does more than 0.1 GFLOP/s
  torch_peak = record["torch_matmul_peak_flops"]
  assert (torch_peak is None and "not installed" in record["torch_matmul_note"]) or torch_peak > 1e8
  assert record["versions"]["jax"] == jax.__version__ and record["versions"]["flax"]
  assert record["environment"].get("XLA_FLAGS") == os.environ.get("XLA_FLAGS")
  assert len(record["load_average_at_start"]) == 3 and len(record["load_average_at_end"]) == 3


@pytest.mark.slow
def test_smoke_commands_run_as_written_and_record_the_machine(repo_copy):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  for command in readme_smoke_commands():
    proc = subprocess.run(shlex.split(command), cwd=repo_copy, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert re.search(r"^machine: .*cores.*fp32 matmul peak XLA \d+ GFLOP/s", proc.stdout, re.M), proc.stdout
    name = command.split()[1][len("bench/"):-len(".py")]
    [path] = glob.glob(str(repo_copy / "bench" / "results" / f"{name}_*.json"))
    with open(path) as f:
      result = json.load(f)
    _assert_machine_record(result["machine"])
    if name == "train_throughput":
      [run] = result["runs"]
      assert run["ours"]["tokens_per_s"] > 0 and 0 < run["ours"]["mfu"] < 1
      # tiny's vocabulary is one loss chunk, so the model's FLOPs (the full-logits twin, before XLA's
      # optimizations) and XLA's count for the executable agree.
      assert run["ours"]["step_flops"] == pytest.approx(run["ours"]["compiled_step_flops"], rel=0.01)
      if run["peer"]:  # the ceiling: ours/peer with our FLOPs at the measured peak
        assert run["ratio_at_full_mfu"] == pytest.approx(run["ratio_ours_over_peer"] / run["ours"]["mfu"])
    else:
      assert {(r["method"], r["batch"]) for r in result["results"]} == {("greedy", 1), ("beam-4", 1)}
      assert all(r["ours_tokens"] == 4 for r in result["results"])
      for r in result["results"]:
        if "peer_seconds" in r:
          assert r["ratio_at_full_mfu"] == pytest.approx(r["ratio_ours_over_peer"] / r["ours_mfu"])


def test_summary_line_names_avx512_hosts_and_missing_peaks():
  record = {"cpu": {"model_name": "AMD EPYC 9R14", "family": "25", "model": "17", "avx512": True,
                    "simd_flags": ["avx2", "avx512_bf16", "avx512f"]},
            "cpu_count": 2, "memory_gib": 16.0, "xla_matmul_peak_flops": 206e9, "torch_matmul_peak_flops": None,
            "versions": {"jax": "0.10.2"}, "environment": {}, "load_average_at_start": [0.1, 0.2, 0.3],
            "commit": None}
  line = hardware.summary_line(record)
  assert "AMD EPYC 9R14 (family 25 model 17, AVX-512)" in line
  assert "XLA 206 GFLOP/s, torch not measured" in line and "XLA_FLAGS=(unset)" in line
  assert line.endswith("commit unknown")
  dirty = hardware.summary_line(dict(record, commit="0123456789abcdef0123456789abcdef01234567+dirty"))
  assert dirty.endswith("commit 0123456789ab+dirty")


def test_cpu_description_reads_this_machine():
  cpu = hardware.cpu_description()
  assert cpu["model_name"]
  if os.path.exists("/proc/cpuinfo"):
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0]
    assert cpu["avx512"] == ("avx512f" in flags)


@pytest.mark.slow
def test_gpu_suite_runs_end_to_end_on_a_cpu_at_toy_sizes(repo_copy):
  """The GPU suite's code path (train, greedy and beam decode, MFU, JSON) at toy sizes on the CPU; the
  full suite needs a GPU (docs/performance.md)."""
  proc = subprocess.run(
      [sys.executable, "bench/gpu_suite.py", "--models", "tiny", "--train_batch", "2", "--inputs", "32",
       "--targets", "8", "--train_steps", "1", "--decode_batch", "2", "--decode_input_length", "16",
       "--new_tokens", "3", "--repeats", "1", "--peak_tflops", "0.5"],
      cwd=repo_copy, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  [path] = glob.glob(str(repo_copy / "bench" / "results" / "gpu_suite_*.json"))
  with open(path) as f:
    result = json.load(f)
  _assert_machine_record(result["machine"])
  assert result["datasheet_peak_flops"] == 0.5e12 and result["dtype"] == "bfloat16"
  [train] = result["train"]["rows"]
  assert train["dtype"] == "bfloat16" and train["seq_per_s"] > 0 and 0 < train["mfu"] < 1
  assert [r["method"] for r in result["decode"]["rows"]] == ["greedy", "beam-4"]
  assert all(r["tokens"] == 2 * 3 and r["mfu"] > 0 for r in result["decode"]["rows"])


def test_gpu_suite_finds_datasheet_peaks_by_device_kind():
  import gpu_suite  # pylint: disable=g-import-not-at-top  (bench/ is on sys.path above)
  assert gpu_suite.datasheet_peak_flops("NVIDIA H100 PCIe") == 756e12
  assert gpu_suite.datasheet_peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
  assert gpu_suite.datasheet_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert gpu_suite.datasheet_peak_flops("cpu") is None


@pytest.mark.slow
def test_profile_step_sums_a_train_step_and_a_decode_loop_by_module(repo_copy):
  for args, case in ((["--model", "tiny", "--steps", "1"], "tiny train step"),
                     (["--decode", "greedy", "--batch", "2", "--input_length", "8", "--new_tokens", "3",
                       "--steps", "1"], "greedy decode, batch 2, input 8, 3 tokens")):
    proc = subprocess.run([sys.executable, "bench/profile_step.py", *args], cwd=repo_copy,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [path] = glob.glob(str(repo_copy / "bench" / "results" / "profile_step_*.json"))
    with open(path) as f:
      result = json.load(f)
    os.remove(path)
    assert result["case"] == case and result["thunk_ms_per_call"] > 0
    modules = result["by_module_ms_per_call"]
    if "--decode" in args:
      assert result["loop_steps_per_call"] == 3 and result["loop_thunk_ms_per_step"] > 0
      assert any(m.startswith("forward loop decoder/layers_N/mlp") for m in modules), sorted(modules)
    else:
      assert any(m.startswith("backward encoder/layers_N/attention") for m in modules), sorted(modules)


# A hand-written optimized-HLO excerpt: a fusion calling a (4, 3) x (3, 5) dot, a plain batched dot,
# and a while loop whose thunk spans its body's.
_HLO = """
%fused_computation.7 (param_0: f32[4,3], param_1: f32[3,5]) -> f32[4,5] {
  %param_0 = f32[4,3]{1,0} parameter(0)
  %param_1 = f32[3,5]{1,0} parameter(1)
  ROOT %dot.3 = f32[4,5]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: f32[4,3], b: f32[3,5], s: f32[6,8,2]) -> f32[4,5] {
  %a = f32[4,3]{1,0} parameter(0)
  %b = f32[3,5]{1,0} parameter(1)
  %s = f32[6,8,2]{2,1,0} parameter(2)
  %ynn_fusion.7 = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.7
  %dot_general.9 = f32[6,2,2]{2,1,0} dot(%s, %s), lhs_batch_dims={0}, lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}
  %while.2 = (s32[], f32[4,5]{1,0}) while(%t), condition=%cond, body=%body
  ROOT %add.1 = f32[4,5]{1,0} add(%ynn_fusion.7, %ynn_fusion.7)
}
"""


def test_thunk_timeline_counts_dot_flops_of_fusions_and_plain_dots():
  flops = thunk_timeline.dot_flops(_HLO)
  assert flops["ynn_fusion.7"] == 2 * 4 * 5 * 3
  assert flops["dot_general.9"] == 2 * (6 * 2 * 2) * 8
  assert "add.1" not in flops and "while.2" not in flops
  assert thunk_timeline.control_flow(_HLO) == {"while.2"}


def test_thunk_timeline_splits_overlap_and_gives_gaps_to_the_thunk_before():
  events = [{"ts": 0, "dur": 10},    # alone 0-4, with the second 4-10
            {"ts": 4, "dur": 8},     # shared 4-10, alone 10-12, then a gap until 20
            {"ts": 20, "dur": 5}]    # alone
  shares, gaps = thunk_timeline.wall_shares(events)
  assert shares == [4 + 3, 3 + 2, 5]
  assert gaps == [0, 8, 0]
  assert sum(shares) + sum(gaps) == 25  # the span from the first start to the last end
  # Marked asynchronous, the first event (a dot whose work outlives its event) owns the gap instead.
  shares, gaps = thunk_timeline.wall_shares(events, [True, False, False])
  assert gaps == [8, 0, 0]

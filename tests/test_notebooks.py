"""Both notebooks, executed headless in a real Jupyter kernel (nbclient) on the demo data.

Any cell error fails the test. The install cell runs with FLAN_SKIP_INSTALL=1 (its documented
switch, README "Colab notebooks"); the finetune notebook's `parameters` cell is overridden papermill-style
(a cell injected after it) with a CPU-sized TRAIN_STEPS. Each runs in a copy of the repository, from
notebooks/ as Jupyter starts it, so its relative paths are the ones a user has.
"""
import json
import os
import pathlib
import subprocess
import sys

import nbformat
from nbclient import NotebookClient
import pytest

from tests.conftest import copy_repo_root

REPO = pathlib.Path(__file__).resolve().parents[1]
README_SECTION = "## Colab notebooks"


def repo_copy(tmp_path: pathlib.Path) -> pathlib.Path:
  return copy_repo_root(tmp_path / "repo", keep=("notebooks",))


def notebook_env(root: pathlib.Path) -> dict:
  env = dict(os.environ, FLAN_SKIP_INSTALL="1", PYTHONPATH=str(root),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
             # CPU cost: XLA compiles dominate the tiny model's steps (as tests/engine/conftest.py)
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip())
  for name in ("FLAN_DATA_DIR", "FLAN_VOCAB_PATH", "FLAN_COLLECTION_DIR"):
    env.pop(name, None)  # the demo data only
  return env


def outputs(nb) -> tuple[str, str]:
  """(all text/plain + stream text, all text/html) of an executed notebook."""
  text, html = [], []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream" and out.get("name") == "stdout":
        text.append(out["text"])
      data = out.get("data", {})
      text.append(data.get("text/plain", ""))
      html.append(data.get("text/html", ""))
  return "\n".join(text), "\n".join(html)


def execute(root: pathlib.Path, name: str, parameters: dict) -> nbformat.NotebookNode:
  nb = nbformat.read(root / "notebooks" / name, as_version=4)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, injected)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(root / "notebooks")}}).execute(env=notebook_env(root))
  return nb


def stderr_outputs(nb) -> list[str]:
  """Every stderr stream of an executed notebook (red blocks for its reader): none is expected on CPU."""
  return [out["text"] for cell in nb.cells for out in cell.get("outputs", [])
          if out.get("output_type") == "stream" and out.get("name") == "stderr"]


def readme_commands() -> list[str]:
  text = (REPO / "README.md").read_text(encoding="utf-8")
  section = text[text.index(README_SECTION):]
  section = section[:section.index("\n## ", len(README_SECTION))]
  block = section[section.index("```bash\n") + len("```bash\n"):]
  block = block[:block.index("```")]
  return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_readme_notebook_commands(tmp_path):
  """The README's commands as written, from a copy of the repo root: the inspect notebook executed by
  `jupyter execute`, then the CLI on a file of hand-written rows."""
  root = repo_copy(tmp_path)
  rows = [{"chat": "Ann: Is the printer fixed?\nBob: Done, since this morning {ok}.",
           "summary": "The printer was fixed."},
          {"chat": "Cy: Send the report?\nDee: By noon.", "summary": "Dee sends it by noon."}]
  (root / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  commands = readme_commands()
  assert len(commands) == 2 and "jupyter execute notebooks/inspect_tasks.ipynb" in commands[0], commands
  results = [subprocess.run(["bash", "-c", c], cwd=root, env=notebook_env(root), capture_output=True,
                            text=True, timeout=600, check=False) for c in commands]
  for command, result in zip(commands, results):
    assert result.returncode == 0, (command, result.stderr[-4000:])
  nb = nbformat.read(root / "notebooks" / "inspect_tasks.out.ipynb", as_version=4)
  assert not stderr_outputs(nb), stderr_outputs(nb)
  text, html = outputs(nb)
  assert "install skipped" in text
  assert "demo_support_fs" in text and "held-out" in text and "not here" in text  # the task table
  for piece in ("Mixture rates", "12.50%", "<mark", "exemplar 1", "query", "inputs pieces",
                "Token lengths before trimming", "Vocabulary", "my_chats_zs"):
    assert piece in html, piece
  assert "image/png" in json.dumps(nb)  # the rates and length charts
  assert "&#123;" in text  # the escaping demonstration
  cli = results[1].stdout
  assert "== chats_zs (train)" in cli and "<unk>" in cli and "p50=" in cli


@pytest.mark.slow
def test_finetune_notebook(tmp_path):
  root = repo_copy(tmp_path)
  cpu_cost = {"TRAIN_STEPS": 20, "EVAL_EXAMPLES": 4, "EVAL_LENGTHS": {"inputs": 256, "targets": 64},
              "GIN_BINDINGS": ["BATCH_SIZE = 8", "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 32}"]}
  nb = execute(root, "finetune_and_evaluate.ipynb", cpu_cost)
  assert not stderr_outputs(nb), stderr_outputs(nb)  # no TF/XLA/CUDA start-up lines, no text progress bars
  text, _ = outputs(nb)
  assert "JAX devices" in text and "fresh parameters" in text
  assert (root / "runs/notebook_finetune/demo/checkpoint_20").is_dir()  # the engine's own checkpoint
  assert (root / "runs/notebook_finetune/demo/train").is_dir()  # TensorBoard
  assert (root / "runs/notebook_finetune/eval/results.json").is_file()
  results = json.loads((root / "runs/notebook_finetune/eval/results.json").read_text())
  assert results["step"] == 20 and set(results["tasks"]) == {
      "demo_support_zs", "demo_support_fs", "demo_restaurant_zs", "demo_restaurant_fs"}
  assert "step 0" in text and "step 20" in text and "rougeLsum" in text  # the comparison table
  assert "->" in text and "'5':" in text  # predictions for typed text, scores of the options
  assert "FLAN_T5_CHECKPOINT is not set: skipped" in text

"""Package-level promises of flan_tasks."""
import json
import pathlib
import re

import gin
import seqio

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "flan_tasks"


def test_flan_tasks_code_never_imports_the_training_stack():
  # flan_tasks stays usable by upstream T5X (its own pinned JAX): no JAX/Flax/Optax/engine imports.
  pattern = re.compile(r"^\s*(import|from)\s+(jax|flax|optax|orbax|flan_t5x)\b", re.MULTILINE)
  offenders = [str(p) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())]
  assert not offenders


def test_gin_macro_can_register_a_user_task(tmp_path):
  path = tmp_path / "tickets.jsonl"
  path.write_text("".join(json.dumps({"text": f"ticket {i}", "label": f"summary {i}"}) + "\n"
                          for i in range(4)))
  gin.clear_config()
  try:
    gin.parse_config(f"""
        import flan_tasks
        MIXTURE_OR_TASK_NAME = @flan_tasks.add_instruction_task()
        flan_tasks.add_instruction_task.name = 'tickets'
        flan_tasks.add_instruction_task.source_files = {{'train': '{path}'}}
        flan_tasks.add_instruction_task.input_field = 'text'
        flan_tasks.add_instruction_task.target_field = 'label'
        flan_tasks.add_instruction_task.family = 'news_summarization'
        flan_tasks.add_instruction_task.vocabulary = @flan_tasks.demo_vocabulary()
    """)
    assert gin.query_parameter("%MIXTURE_OR_TASK_NAME").scoped_configurable_fn() == "tickets_zs"
    assert "tickets_fs" in seqio.TaskRegistry.names()
  finally:
    gin.clear_config()


def test_importing_after_gin_is_locked_registers_tasks_and_configurables():
  # T5X imports MIXTURE_OR_TASK_MODULE after parsing and finalizing gin; a fresh process so that
  # flan_tasks is really imported for the first time under a locked config.
  import subprocess
  import sys
  code = """
import importlib
import gin
import seqio
gin.parse_config("X = 1")
gin.finalize()
assert gin.config_is_locked()
importlib.import_module("flan_tasks")  # what t5x.utils.import_module does
assert gin.config_is_locked(), "the lock must be restored"
assert {"flan_mix", "demo_mix", "demo_heldout"} <= set(seqio.MixtureRegistry.names())
assert "demo_dialogue_zs" in seqio.TaskRegistry.names()
gin.clear_config()
gin.parse_config("import flan_tasks\\nflan_tasks.configure.missing_data = 'error'")
print("OK")
"""
  root = str(PACKAGE.parent)
  env = dict(__import__("os").environ, PYTHONPATH=root)
  proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_the_wheel_carries_flan_t5x_versions_of_t5x_include_files(tmp_path):
  """A pip-installed flan_t5x (no checkout, no T5X) resolves `include 't5x/configs/runs/finetune.gin'`."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  repo = pathlib.Path(__file__).resolve().parents[1]
  source = tmp_path / "source"  # setuptools writes build/ beside setup.py: not into the checkout
  for name in ("setup.py", "README.md"):
    source.mkdir(exist_ok=True)
    shutil.copy(repo / name, source / name)
  for package in ("flan_t5x", "flan_tasks"):
    shutil.copytree(repo / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
  names = zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist()
  for include in ("configs/runs/finetune.gin", "configs/runs/eval.gin", "configs/runs/infer.gin",
                  "configs/runs/pretrain.gin", "examples/t5/t5_1_1/base.gin", "examples/t5/t5_1_1/xxl.gin"):
    assert f"flan_t5x/t5x_names/gin/t5x/{include}" in names, include


def test_the_tools_the_jobs_and_readme_name_are_installed():
  """Every training run ends with `tensorboard --logdir ...`; the README executes notebooks with
  `jupyter nbconvert`: both come with the package's install (tensorboard) and its notebook extra."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  bin_dir = pathlib.Path(sys.executable).parent
  for command in (["tensorboard", "--version_tb"], ["jupyter", "nbconvert", "--version"]):
    assert (bin_dir / command[0]).exists(), f"{command[0]} is not installed beside {sys.executable}"
    done = subprocess.run([str(bin_dir / command[0]), *command[1:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip(), (command, done.stderr[-2000:])

"""Upstream T5X (google-research/t5x) with flan_tasks and gin/t5x/: skipped where t5x is not importable.

Upstream T5X is not on the package registry; install it from its repository into an environment that
also has this package (`pip install -e .[test]`), then run these tests with that environment's python.
"""
import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
T5X_GIN_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(str(REPO / "gin" / "t5x" / "*.gin")))
# Which T5X script binds each file's `__main__` run configurables.
SCRIPT = {"eval_heldout.gin": "eval", "eval_demo.gin": "eval", "infer.gin": "infer",
          "demo_model.gin": None, "vocabulary.gin": None}
HAS_T5X = importlib.util.find_spec("t5x") is not None
pytestmark = pytest.mark.skipif(not HAS_T5X, reason="upstream t5x is not importable (install it from "
                                "github.com/google-research/t5x to run these)")


def _t5x_root() -> str:
  """The directory T5X's own gin files are included from (`t5x/configs/...` under it)."""
  import t5x  # pylint: disable=g-import-not-at-top
  return str(pathlib.Path(t5x.__file__).resolve().parents[1])


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
             XLA_FLAGS="--xla_backend_optimization_level=0")
  env.update(extra)
  return env


def test_every_t5x_gin_file_is_checked():
  assert set(os.path.basename(p) for p in T5X_GIN_FILES) >= {
      "flan_mix.gin", "dialogsum.gin", "eval_heldout.gin", "infer.gin", "demo.gin", "eval_demo.gin"}


@pytest.mark.parametrize("path", T5X_GIN_FILES)
def test_t5x_gin_file_parses_under_its_t5x_script(path):
  # A fresh process per file: T5X's run files bind `__main__` (the script), and gin's registry is global.
  script = SCRIPT.get(os.path.basename(path), "train")
  files = [path] if os.path.basename(path) in ("demo.gin", "eval_demo.gin", "demo_model.gin") else [
      "t5x/examples/t5/t5_1_1/small.gin", path]
  code = f"""
import sys, gin
import t5x.{script or 'train'} as script
sys.modules['__main__'] = script
for p in [{_t5x_root()!r}, {str(REPO)!r}]:
  gin.add_config_file_search_path(p)
gin.parse_config_files_and_bindings({files!r}, ['DROPOUT_RATE = 0.0'], finalize_config=False)
model = gin.query_parameter('%MODEL').scoped_configurable_fn() if {script is not None} else None
import seqio
if model is not None and {os.path.basename(path) not in ('demo.gin', 'eval_demo.gin')}:
  # The T5 vocabulary of the model is the tasks' (T5X's check), by default T5X's file.
  assert model.output_vocabulary == seqio.SentencePieceVocabulary(
      'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model'), model.output_vocabulary
  assert model.output_vocabulary == seqio.get_mixture_or_task('samsum_zs').output_features['targets'].vocabulary
print('PARSED')
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and "PARSED" in proc.stdout, proc.stderr[-3000:]


def _metrics(eval_dir: pathlib.Path) -> dict:
  out = {}
  for path in (eval_dir / "inference_eval").glob("*-metrics.jsonl"):
    lines = path.read_text().splitlines()
    out[path.name[:-len("-metrics.jsonl")]] = json.loads(lines[-1])
  return out


def _train_then_eval(tmp_path, model_args, eval_args, train_bindings, env):
  root = _t5x_root()
  model_dir = tmp_path / "model"
  common = {"INITIAL_CHECKPOINT_PATH": "None", "TRAIN_STEPS": "3", "EVAL_PERIOD": "3", "EVAL_STEPS": "1",
            "BATCH_SIZE": "4", "utils.SaveCheckpointConfig.period": "3"}
  common.update(train_bindings)
  # No decoding during training (t5x.eval below decodes); the binding needs the run file's import.
  no_infer_eval = ["--gin_bindings=from __gin__ import dynamic_registration",
                   "--gin_bindings=import __main__ as train_script",
                   "--gin_bindings=train_script.train.infer_eval_dataset_cfg = None"]
  train = subprocess.run(
      [sys.executable, "-m", "t5x.train", f"--gin_search_paths={root}", *model_args,
       f"--gin.MODEL_DIR='{model_dir}'"] + [f"--gin.{k}={v}" for k, v in common.items()] + no_infer_eval,
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert train.returncode == 0, train.stderr[-4000:]
  assert (model_dir / "checkpoint_3").is_dir() and (model_dir / "training_eval").is_dir()
  eval_dir = tmp_path / "eval"
  evaluate = subprocess.run(
      [sys.executable, "-m", "t5x.eval", f"--gin_search_paths={root}", *eval_args,
       f"--gin.CHECKPOINT_PATH='{model_dir / 'checkpoint_3'}'", f"--gin.EVAL_OUTPUT_DIR='{eval_dir}'"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert evaluate.returncode == 0, evaluate.stderr[-4000:]
  return _metrics(eval_dir)


def test_t5x_train_on_demo_then_eval_writes_rouge_and_accuracy(tmp_path):
  metrics = _train_then_eval(
      tmp_path, ["--gin_file=gin/t5x/demo.gin"],
      ["--gin_file=gin/t5x/eval_demo.gin", "--gin_bindings=from __gin__ import dynamic_registration",
       "--gin_bindings=import seqio", "--gin_bindings=seqio.Evaluator.num_examples = 16"],  # keep it short
      {}, _env())
  assert sorted(metrics) == ["demo_restaurant_fs", "demo_restaurant_zs", "demo_support_fs", "demo_support_zs"]
  assert {"rouge1", "rouge2", "rougeLsum"} <= set(metrics["demo_support_zs"])
  assert "accuracy" in metrics["demo_restaurant_zs"]


@pytest.mark.skipif(not (SHARED / "datasets" / "dialogsum").is_dir(), reason="no ../shared/datasets/dialogsum")
def test_t5x_train_and_eval_on_dialogsum_with_the_t5_vocabulary(tmp_path):
  spiece = SHARED / "checkpoints" / "t5-spiece" / "spiece.model"
  tiny = ["--gin_file=t5x/examples/t5/t5_1_1/tiny.gin"]
  shared = {"VOCAB_PATH": f"'{spiece}'", "network.T5Config.dtype": "'float32'"}
  env = _env(FLAN_DATA_DIR=str(SHARED / "datasets"))
  env.pop("FLAN_VOCAB_PATH", None)  # VOCAB_PATH alone sets the model's and the task's vocabulary
  metrics = _train_then_eval(
      tmp_path, tiny + ["--gin_file=gin/t5x/dialogsum.gin"],
      tiny + ["--gin_file=gin/t5x/eval_heldout.gin", "--gin.MIXTURE_OR_TASK_NAME='dialogsum_zs'",
              "--gin_bindings=from __gin__ import dynamic_registration", "--gin_bindings=import seqio",
              "--gin_bindings=from t5x.examples.t5 import network",
              "--gin_bindings=seqio.Evaluator.num_examples = 32"]  # of 500: keep the test short
      + [f"--gin.{k}={v}" for k, v in shared.items()],
      dict(shared, TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 64}"), env)
  assert sorted(metrics) == ["dialogsum_zs"] and {"rouge1", "rougeLsum"} <= set(metrics["dialogsum_zs"])


@pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                    reason="apache-beam is not installed (pip install -e .[cache])")
def test_t5x_train_from_the_seqio_cache(tmp_path):
  from tests.conftest import cache_tasks  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import flan_tasks  # pylint: disable=g-import-not-at-top,unused-import
  cache_dir = tmp_path / "cache"
  tasks = [t.name for t in seqio.get_mixture_or_task("demo_mix").tasks]
  cache_tasks(cache_dir, tasks, _env())
  model_dir = tmp_path / "model"
  bindings = {"MODEL_DIR": f"'{model_dir}'", "USE_CACHED_TASKS": "True", "INITIAL_CHECKPOINT_PATH": "None",
              "TRAIN_STEPS": "3", "EVAL_PERIOD": "3", "EVAL_STEPS": "1", "BATCH_SIZE": "4",
              "utils.SaveCheckpointConfig.period": "3"}
  train = subprocess.run(
      [sys.executable, "-m", "t5x.train", f"--gin_search_paths={_t5x_root()}", "--gin_file=gin/t5x/demo.gin",
       f"--seqio_additional_cache_dirs={cache_dir}"] + [f"--gin.{k}={v}" for k, v in bindings.items()]
      + ["--gin_bindings=from __gin__ import dynamic_registration",
         "--gin_bindings=import __main__ as train_script",
         "--gin_bindings=train_script.train.infer_eval_dataset_cfg = None"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1200)
  assert train.returncode == 0, train.stderr[-4000:]
  for name in tasks:  # T5X's training read (train and training_eval) every member from the cache
    assert f"'{name}' is cached at {cache_dir / name}" in train.stderr, name
  assert (model_dir / "checkpoint_3").is_dir()
  assert sorted(os.listdir(model_dir / "training_eval")) == sorted(tasks + ["demo_mix"])

"""Upstream T5X (google-research/t5x) runs the same gin tree as flan_t5x; skipped where t5x is absent.

Upstream T5X is not on the package registry: install it from its repository into a scratch
environment that also has this package (`pip install -e .[test]`) and run these tests with that
environment's python. Every command runs as the README writes it, from a copy of the repository
root (relative paths included, no --gin_search_paths: T5X searches '.' and its own root), with only
CPU-cost overrides appended: model size (gin/sizes/tiny.gin), steps, batch, lengths, examples
decoded, and decoding during training off.
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
HAS_T5X = importlib.util.find_spec("t5x") is not None
pytestmark = pytest.mark.skipif(not HAS_T5X, reason="upstream t5x is not importable (install it from "
                                "github.com/google-research/t5x to run these)")
GIN_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(str(REPO / "gin" / "**" / "*.gin"), recursive=True))
TINY = ["--gin_file=gin/sizes/tiny.gin"]
NO_DECODING_IN_TRAINING = ["--gin_bindings=from __gin__ import dynamic_registration",
                           "--gin_bindings=import __main__ as train_script",
                           "--gin_bindings=train_script.train.infer_eval_dataset_cfg = None"]
SHORT_TRAIN = ["--gin.TRAIN_STEPS_RELATIVE=2", "--gin.BATCH_SIZE=4", "--gin.EVAL_PERIOD=2", "--gin.EVAL_STEPS=1",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", *NO_DECODING_IN_TRAINING]
FEW_EXAMPLES = ["--gin.seqio.Evaluator.num_examples=8"]


def _first_lines(path) -> str:
  return "".join((REPO / path).read_text().splitlines(keepends=True)[:3])


def _job(path: str) -> str:
  name = os.path.basename(path)
  return "eval" if "eval" in name else "infer" if "infer" in name else "train"


def _files_for(path: str) -> list[str]:
  """Building blocks need a model file before them, size files a run file, as on the command line."""
  if path.startswith("gin/runs/"):
    return ["gin/models/t5_1_1_tiny.gin", path]
  if path.startswith("gin/sizes/"):
    return ["gin/flan_mix.gin", path]
  return [path]


@pytest.mark.parametrize("path", GIN_FILES)
def test_every_gin_file_runs_on_t5x_or_says_it_is_flan_t5x_only(path):
  if "flan_t5x only" in _first_lines(path):
    pytest.skip(f"{path} says it is flan_t5x only")
  # A fresh process per file: T5X's run files bind `__main__` (the script), and gin's registry is global.
  job = _job(path)
  code = f"""
import sys, gin
import t5x.{job} as script
sys.modules['__main__'] = script
gin.add_config_file_search_path('.')
for p in script._DEFAULT_GIN_SEARCH_PATHS:
  gin.add_config_file_search_path(p)
gin.parse_config_files_and_bindings({_files_for(path)!r}, ['DROPOUT_RATE = 0.0'], finalize_config=False)
print('PARSED')
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(REPO), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and "PARSED" in proc.stdout, proc.stderr[-3000:]


def _env(root, **extra):
  env = dict(os.environ, PYTHONPATH=str(root), XLA_FLAGS="--xla_backend_optimization_level=0")
  env.update(extra)
  return env


def _run(root, *args, env=None, timeout=1500):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=root, env=env or _env(root), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc


def _metrics(eval_dir: pathlib.Path) -> dict:
  out = {}
  for path in (eval_dir / "inference_eval").glob("*-metrics.jsonl"):
    lines = path.read_text().splitlines()
    out[path.name[:-len("-metrics.jsonl")]] = json.loads(lines[-1])
  return out


def test_demo_as_the_readme_writes_it(repo_copy):
  # README: python -m t5x.train --gin_file=gin/demo.gin ; python -m t5x.eval --gin_file=gin/eval_demo.gin
  _run(repo_copy, "t5x.train", "--gin_file=gin/demo.gin", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
       "--gin.EVAL_PERIOD=2", "--gin.EVAL_STEPS=1")
  model_dir = repo_copy / "runs" / "demo"  # the file's relative MODEL_DIR, made absolute for orbax
  assert (model_dir / "checkpoint_2").is_dir() and not list(model_dir.glob("*tmp*"))
  _run(repo_copy, "t5x.eval", "--gin_file=gin/eval_demo.gin", "--gin.CHECKPOINT_PATH='runs/demo/checkpoint_2'",
       *FEW_EXAMPLES)
  metrics = _metrics(model_dir / "eval")
  assert sorted(metrics) == ["demo_restaurant_fs", "demo_restaurant_zs", "demo_support_fs", "demo_support_zs"]
  assert {"rouge1", "rouge2", "rougeLsum"} <= set(metrics["demo_support_zs"])
  assert "accuracy" in metrics["demo_restaurant_zs"]
  # README: ENGINE=t5x launch/eval_rouge.sh runs/demo runs/demo/eval_t5x gin/eval_demo.gin (a MODEL_DIR)
  env = _env(repo_copy, ENGINE="t5x", PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
  launched = subprocess.run(["launch/eval_rouge.sh", "runs/demo", "runs/demo/eval_t5x", "gin/eval_demo.gin",
                             *FEW_EXAMPLES], cwd=repo_copy, env=env, capture_output=True, text=True, timeout=1500)
  assert launched.returncode == 0, launched.stderr[-3000:]
  assert _metrics(model_dir / "eval_t5x") == metrics
  # README: python -m flan_t5x.train --gin_file=gin/demo.gin continues T5X's runs/demo in place.
  resumed = _run(repo_copy, "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=4",
                 "--gin.EVAL_PERIOD=2", "--gin.EVAL_STEPS=1")
  assert "resumed T5X's" in resumed.stdout and (model_dir / "checkpoint_4").is_dir(), resumed.stdout


def test_flan_mix_and_flan2022_as_the_readme_writes_them(repo_copy, tmp_path, tiny_spm):
  from tests.conftest import write_flan_layout  # pylint: disable=g-import-not-at-top
  from flan_tasks import synthetic_collection  # pylint: disable=g-import-not-at-top
  write_flan_layout(tmp_path / "data")
  env = _env(repo_copy, FLAN_DATA_DIR=str(tmp_path / "data"), FLAN_VOCAB_PATH=tiny_spm,
             TFDS_DATA_DIR=str(tmp_path / "no_tfds"))
  # README: python -m t5x.train --gin_file=gin/flan_mix.gin --gin.MODEL_DIR=...
  _run(repo_copy, "t5x.train", "--gin_file=gin/flan_mix.gin", "--gin.MODEL_DIR='runs/flan_mix'", *TINY,
       "--gin.INITIAL_CHECKPOINT_PATH=None", *SHORT_TRAIN, env=env)
  assert (repo_copy / "runs" / "flan_mix" / "checkpoint_2").is_dir()
  collection = synthetic_collection.write_collection(str(tmp_path / "collection"), 20, 400).root
  _run(repo_copy, "t5x.train", "--gin_file=gin/flan2022.gin", f"--gin.FLAN_COLLECTION_DIR='{collection}'",
       "--gin.MODEL_DIR='runs/flan2022'", *TINY, "--gin.INITIAL_CHECKPOINT_PATH=None", *SHORT_TRAIN, env=env)
  assert (repo_copy / "runs" / "flan2022" / "checkpoint_2").is_dir()


@pytest.mark.skipif(not (SHARED / "datasets" / "dialogsum").is_dir(), reason="no ../shared/datasets/dialogsum")
def test_dialogsum_train_then_heldout_eval_and_infer_with_the_t5_vocabulary(repo_copy):
  spiece = SHARED / "checkpoints" / "t5-spiece" / "spiece.model"
  env = _env(repo_copy, FLAN_DATA_DIR=str(SHARED / "datasets"))
  env.pop("FLAN_VOCAB_PATH", None)  # VOCAB_PATH alone sets the model's and the tasks' vocabulary
  vocab = [f"--gin.VOCAB_PATH='{spiece}'"]
  # README: python -m t5x.train --gin_file=gin/dialogsum.gin --gin.MODEL_DIR=...
  _run(repo_copy, "t5x.train", "--gin_file=gin/dialogsum.gin", "--gin.MODEL_DIR='runs/dialogsum'", *TINY,
       "--gin.INITIAL_CHECKPOINT_PATH=None", *SHORT_TRAIN, *vocab, env=env)
  # README: python -m t5x.eval --gin_file=gin/eval_heldout.gin --gin.CHECKPOINT_PATH=... --gin.EVAL_OUTPUT_DIR=...
  _run(repo_copy, "t5x.eval", "--gin_file=gin/eval_heldout.gin",
       "--gin.CHECKPOINT_PATH='runs/dialogsum/checkpoint_2'", "--gin.EVAL_OUTPUT_DIR='runs/eval'", *TINY, *vocab,
       *FEW_EXAMPLES, env=env)
  metrics = _metrics(repo_copy / "runs" / "eval")
  assert "dialogsum_zs" in metrics and {"rouge1", "rougeLsum"} <= set(metrics["dialogsum_zs"])
  # The same checkpoint and eval gin on both engines: the same predictions and metrics (T5X's files). In
  # float32: the 2-step tiny model's bfloat16 logits over 32k pieces hold near-ties that the engines' op
  # orders break differently (the trained demo model agrees in either dtype).
  for engine, out in (("t5x.eval", "runs/eval_t5x_fp32"), ("flan_t5x.eval", "runs/eval_flan_fp32")):
    _run(repo_copy, engine, "--gin_file=gin/eval_heldout.gin", "--gin.CHECKPOINT_PATH='runs/dialogsum/checkpoint_2'",
         f"--gin.EVAL_OUTPUT_DIR='{out}'", *TINY, *vocab, *FEW_EXAMPLES, "--gin.network.T5Config.dtype='float32'",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 32}", env=env)
  parity = _same_predictions_and_metrics(repo_copy / "runs" / "eval_t5x_fp32", repo_copy / "runs" / "eval_flan_fp32")
  assert {"dialogsum_zs", "dialogsum_fs"} <= set(parity)
  # README: python -m t5x.infer --gin_file=gin/infer.gin --gin.CHECKPOINT_PATH=... --gin.INFER_OUTPUT_DIR=...
  _run(repo_copy, "t5x.infer", "--gin_file=gin/infer.gin", "--gin.CHECKPOINT_PATH='runs/dialogsum/checkpoint_2'",
       "--gin.INFER_OUTPUT_DIR='runs/infer'", *TINY, *vocab, "--gin.MIXTURE_OR_TASK_NAME='dialogsum_zs'",
       "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}", env=env)
  lines = (repo_copy / "runs" / "infer" / "dialogsum_zs-predict.jsonl-00000-of-00001").read_text().splitlines()
  assert len(lines) == 500 and "prediction" in json.loads(lines[0])


@pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                    reason="apache-beam is not installed (pip install -e .[cache])")
def test_t5x_train_from_the_seqio_cache(repo_copy, tmp_path):
  from tests.conftest import cache_tasks  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import flan_tasks  # pylint: disable=g-import-not-at-top,unused-import
  cache_dir = tmp_path / "cache"
  tasks = [t.name for t in seqio.get_mixture_or_task("demo_mix").tasks]
  cache_tasks(cache_dir, tasks, _env(REPO))
  # README: python -m t5x.train --gin_file=gin/demo.gin --gin.USE_CACHED_TASKS=True --seqio_additional_cache_dirs=...
  train = _run(repo_copy, "t5x.train", "--gin_file=gin/demo.gin", "--gin.USE_CACHED_TASKS=True",
               f"--seqio_additional_cache_dirs={cache_dir}", "--gin.TRAIN_STEPS=3", "--gin.EVAL_PERIOD=3",
               "--gin.EVAL_STEPS=1", "--gin.BATCH_SIZE=4",
               "--gin.utils.SaveCheckpointConfig.period=3")  # T5X: a multiple of EVAL_PERIOD
  for name in tasks:  # T5X's training read (train and training_eval) every member from the cache
    assert f"'{name}' is cached at {cache_dir / name}" in train.stderr, name
  model_dir = repo_copy / "runs" / "demo"
  assert (model_dir / "checkpoint_3").is_dir()
  assert sorted(os.listdir(model_dir / "training_eval")) == sorted(tasks + ["demo_mix"])


def _t5x_train_losses(model_dir: pathlib.Path) -> dict[int, float]:
  """T5X's per-token training loss by step, from its TensorBoard events (LOSS_NORMALIZING_FACTOR per token)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  losses = {}
  for path in (model_dir / "train").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == "loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
  return losses


def _flan_t5x_losses(stdout: str) -> dict[int, float]:
  import re  # pylint: disable=g-import-not-at-top
  return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step (\d+) loss/token ([0-9.]+)", stdout)}


def test_checkpoints_move_between_engines_and_the_loss_continues(repo_copy):
  no_bar = ["--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8", "--gin.train_script.train.use_progress_bar=False",
            "--gin.train_script.train.log_period=2"]
  # flan_t5x trains the demo model 24 steps (the loss falls from ~6.3), then upstream T5X continues it.
  flan = _run(repo_copy, "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/flan'",
              "--gin.TRAIN_STEPS=24", "--gin.utils.SaveCheckpointConfig.period=24", *no_bar)
  flan_losses = _flan_t5x_losses(flan.stdout)
  assert flan_losses[2] > 5 and flan_losses[24] < 0.7 * flan_losses[2], flan_losses
  _run(repo_copy, "flan_t5x.convert", "to-upstream-t5x", "runs/flan/checkpoint_24", "runs/flan_as_t5x",
       "--gin_file=gin/demo_model.gin")
  _run(repo_copy, "t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/t5x'", "--gin.TRAIN_STEPS=28",
       "--gin.INITIAL_CHECKPOINT_PATH='runs/flan_as_t5x/checkpoint_24'", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2",
       "--gin.EVAL_STEPS=1", *NO_DECODING_IN_TRAINING)
  t5x_losses = _t5x_train_losses(repo_copy / "runs" / "t5x")
  first_t5x = t5x_losses[min(t5x_losses)]
  assert min(t5x_losses) > 24 and first_t5x < 1.25 * flan_losses[24], (flan_losses, t5x_losses)
  # flan_t5x resumes T5X's MODEL_DIR in place (same gin file), and the loss continues; a refused run
  # (another model) leaves nothing behind in T5X's directory.
  before = sorted(p.name for p in (repo_copy / "runs" / "t5x").iterdir())
  refused = subprocess.run([sys.executable, "-m", "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/t5x'",
                            "--gin.TRAIN_STEPS=30", "--gin.network.T5Config.mlp_dim=512", *no_bar], cwd=repo_copy,
                           env=_env(repo_copy), capture_output=True, text=True, timeout=900)
  assert refused.returncode != 0 and sorted(p.name for p in (repo_copy / "runs" / "t5x").iterdir()) == before
  resumed = _run(repo_copy, "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/t5x'",
                 "--gin.TRAIN_STEPS=32", *no_bar)
  assert "resumed T5X's" in resumed.stdout and "at step 28" in resumed.stdout, resumed.stdout
  in_place = _flan_t5x_losses(resumed.stdout)
  assert min(in_place) == 30 and in_place[30] < 1.25 * t5x_losses[max(t5x_losses)], (t5x_losses, in_place)
  assert (repo_copy / "runs" / "t5x" / "checkpoint_28").is_dir() and (repo_copy / "runs" / "t5x" / "checkpoint_32").is_dir()
  # ... and flan_t5x continues T5X's own checkpoint (T5X's orbax layout) as INITIAL_CHECKPOINT_PATH.
  back = _run(repo_copy, "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/flan_again'",
              "--gin.INITIAL_CHECKPOINT_PATH='runs/t5x/checkpoint_28'", "--gin.TRAIN_STEPS=30", *no_bar)
  back_losses = _flan_t5x_losses(back.stdout)
  assert list(back_losses) == [30] and back_losses[30] < 1.25 * t5x_losses[max(t5x_losses)], (t5x_losses, back_losses)
  # Each engine evaluates the other's checkpoint.
  _run(repo_copy, "t5x.eval", "--gin_file=gin/eval_demo.gin", "--gin.CHECKPOINT_PATH='runs/flan_as_t5x/checkpoint_24'",
       "--gin.EVAL_OUTPUT_DIR='runs/t5x_eval'", *FEW_EXAMPLES)
  assert "demo_support_zs" in _metrics(repo_copy / "runs" / "t5x_eval")
  _run(repo_copy, "flan_t5x.eval", "--gin_file=gin/eval_demo.gin", "--gin.CHECKPOINT_PATH='runs/t5x/checkpoint_28'",
       "--gin.EVAL_OUTPUT_DIR='runs/flan_eval'", "--gin.EVAL_MAX_EXAMPLES=8")
  assert "demo_support_zs" in (repo_copy / "runs" / "flan_eval" / "results.md").read_text()


def _same_predictions_and_metrics(t5x_dir: pathlib.Path, flan_dir: pathlib.Path) -> dict:
  """Per task: T5X's inference_eval files from t5x.eval and flan_t5x.eval give the same metrics line and
  the same prediction for every example; returns T5X's metrics."""
  metrics = _metrics(t5x_dir)
  assert metrics and metrics == _metrics(flan_dir), (metrics, _metrics(flan_dir))
  for task, line in metrics.items():
    name = f"{task}-{line['step']:06d}.jsonl"
    ours = [json.loads(l) for l in (t5x_dir / "inference_eval" / name).read_text().splitlines()]
    theirs = [json.loads(l) for l in (flan_dir / "inference_eval" / name).read_text().splitlines()]
    assert [r["input"]["inputs_pretokenized"] for r in ours] == [r["input"]["inputs_pretokenized"] for r in theirs]
    assert [r["prediction"] for r in ours] == [r["prediction"] for r in theirs], task
  return metrics


def test_one_checkpoint_and_eval_gin_give_the_same_predictions_on_both_engines(repo_copy):
  # A checkpoint trained by each engine (60 steps of the demo: predictions vary with the input), then
  # gin/eval_demo.gin as the README writes it on both engines, 16 examples per task.
  _run(repo_copy, "flan_t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/flan'", "--gin.TRAIN_STEPS=60",
       "--gin.utils.SaveCheckpointConfig.period=60", "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=16",
       "--gin.train_script.train.use_progress_bar=False")
  _run(repo_copy, "flan_t5x.convert", "to-upstream-t5x", "runs/flan/checkpoint_60", "runs/flan_as_t5x",
       "--gin_file=gin/demo_model.gin")
  _run(repo_copy, "t5x.train", "--gin_file=gin/demo.gin", "--gin.MODEL_DIR='runs/t5x'", "--gin.TRAIN_STEPS=60",
       "--gin.BATCH_SIZE=16", "--gin.EVAL_PERIOD=60", "--gin.EVAL_STEPS=1", "--gin.utils.SaveCheckpointConfig.period=60",
       *NO_DECODING_IN_TRAINING)
  for checkpoint in ("runs/flan_as_t5x/checkpoint_60", "runs/t5x/checkpoint_60"):
    out = checkpoint.split("/")[1]
    _run(repo_copy, "t5x.eval", "--gin_file=gin/eval_demo.gin", f"--gin.CHECKPOINT_PATH='{checkpoint}'",
         f"--gin.EVAL_OUTPUT_DIR='runs/{out}_eval_t5x'", "--gin.seqio.Evaluator.num_examples=16")
    _run(repo_copy, "flan_t5x.eval", "--gin_file=gin/eval_demo.gin", f"--gin.CHECKPOINT_PATH='{checkpoint}'",
         f"--gin.EVAL_OUTPUT_DIR='runs/{out}_eval_flan'", "--gin.seqio.Evaluator.num_examples=16")
    metrics = _same_predictions_and_metrics(repo_copy / "runs" / f"{out}_eval_t5x", repo_copy / "runs" / f"{out}_eval_flan")
    assert sorted(metrics) == ["demo_restaurant_fs", "demo_restaurant_zs", "demo_support_fs", "demo_support_zs"]
    predictions = [json.loads(l)["prediction"] for l in
                   (repo_copy / "runs" / f"{out}_eval_t5x" / "inference_eval" / "demo_support_zs-000060.jsonl").open()]
    assert len(set(predictions)) > 1, predictions  # a trained model, not one output for every input


def _adapt_t5x_example(name: str, destination: pathlib.Path) -> None:
  """T5X's example file, changed only as a user without T5's WMT data and a TPU would: flan_tasks'
  dialogsum_zs for the task (its module instead of t5.data), the tiny T5.1.1 for Base, and the
  software RNG (flan_t5x refuses T5X's hardware RNG)."""
  import re  # pylint: disable=g-import-not-at-top
  import t5x as upstream  # pylint: disable=g-import-not-at-top
  text = (pathlib.Path(upstream.__file__).parent / "examples" / "t5" / "t5_1_1" / "examples" / name).read_text()
  text = re.sub(r"^(import t5\.data\.mixtures|from t5\.data import mixtures)$", "import flan_tasks", text, flags=re.M)
  text = re.sub(r"^MIXTURE_OR_TASK_NAME = .*$", 'MIXTURE_OR_TASK_NAME = "dialogsum_zs"', text, flags=re.M)
  text = text.replace('"t5.data.mixtures"', '"flan_tasks"').replace("use_hardware_rng = True", "use_hardware_rng = False")
  text = text.replace("t5x/examples/t5/t5_1_1/base.gin", "t5x/examples/t5/t5_1_1/tiny.gin")
  destination.mkdir(parents=True, exist_ok=True)
  (destination / name).write_text(text)


def test_t5x_example_files_run_on_flan_t5x_adapted_as_a_user_would(repo_copy, tmp_path, tiny_spm):
  from tests.conftest import write_flan_layout  # pylint: disable=g-import-not-at-top
  write_flan_layout(tmp_path / "data")
  env = _env(repo_copy, FLAN_DATA_DIR=str(tmp_path / "data"), FLAN_VOCAB_PATH=tiny_spm,
             TFDS_DATA_DIR=str(tmp_path / "no_tfds"))
  examples = repo_copy / "t5x" / "examples" / "t5" / "t5_1_1" / "examples"
  for name in ("base_wmt_finetune.gin", "base_wmt_eval.gin", "test_train_t5_tiny.gin", "base_wmt_from_scratch.gin",
               "base_wmt_from_scratch_adamw.gin"):
    _adapt_t5x_example(name, examples)
  where = "t5x/examples/t5/t5_1_1/examples"
  # The model's vocabulary made the tasks' (flan_tasks gives the file 100 sentinel ids), as the
  # vocabulary check tells a user to.
  cpu = [f"--gin.seqio.SentencePieceVocabulary.sentencepiece_model_file='{tiny_spm}'",
         "--gin.seqio.SentencePieceVocabulary.extra_ids=100",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", "--gin.partitioning.PjitPartitioner.num_partitions=1"]
  # Finetuning (predict_batch_with_aux.num_decodes, seqio.Evaluator), from scratch instead of T5X's checkpoint.
  _run(repo_copy, "flan_t5x.train", f"--gin_file={where}/base_wmt_finetune.gin", "--gin.MODEL_DIR='runs/finetune'",
       "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4", *cpu, env=env)
  assert (repo_copy / "runs" / "finetune" / "checkpoint_2").is_dir()
  # Its evaluation (RestoreCheckpointConfig.mode = 'specific'), on the validation split our data has.
  _run(repo_copy, "flan_t5x.eval", f"--gin_file={where}/base_wmt_eval.gin",
       "--gin.CHECKPOINT_PATH='runs/finetune/checkpoint_2'", "--gin.EVAL_OUTPUT_DIR='runs/eval'",
       "--gin.utils.DatasetConfig.split='validation'", *cpu[:2], "--gin.partitioning.PjitPartitioner.num_partitions=1",
       env=env)
  assert _metrics(repo_copy / "runs" / "eval")["dialogsum_zs"]["step"] == 2
  # T5X's own tiny test file (TerminateOnNanAction) and the optax AdamW file (optimizers.chain).
  _run(repo_copy, "flan_t5x.train", f"--gin_file={where}/test_train_t5_tiny.gin", "--gin.MODEL_DIR='runs/tiny'", *cpu,
       env=env)
  assert (repo_copy / "runs" / "tiny" / "checkpoint_3").is_dir()
  _run(repo_copy, "flan_t5x.train", f"--gin_file={where}/base_wmt_from_scratch_adamw.gin", "--gin.MODEL_DIR='runs/adamw'",
       "--gin.TRAIN_STEPS=2", "--gin.optax.warmup_cosine_decay_schedule.warmup_steps=1",
       "--gin.train/utils.DatasetConfig.batch_size=4",
       "--gin.train_eval/utils.DatasetConfig.batch_size=4", *cpu, env=env)
  assert (repo_copy / "runs" / "adamw" / "checkpoint_2").is_dir()


@pytest.mark.parametrize("rules", [
    ((r"target/encoder/layers_1/(.*)", r"target/encoder/old_1/\1"), (r"target/encoder/.*", None),
     (r"state/param_states.*", None)),
    ((r"target/encoder/layers_(\d)/(.*)", r"target/encoder/layers_0/\2"),),
    ((r"target/decoder/(.*)", r"target/encoder/\1"), (r"state/step", None)),
])
def test_assignment_map_reads_what_t5x_reads(rules):
  """flan_t5x's assignment_map plan against T5X's own state_utils.apply_assignment_map on the same names:
  each model parameter is read from the same checkpoint key, or (None) left to fallback_to_scratch."""
  from t5x import state_utils  # pylint: disable=g-import-not-at-top
  from flan_t5x import assignment_map  # pylint: disable=g-import-not-at-top
  model = ["encoder/layers_0/mlp/wi/kernel", "encoder/layers_1/mlp/wi/kernel", "decoder/mlp/wi/kernel",
           "token_embedder/embedding"]
  checkpoint = model[:2] + ["encoder/old_1/mlp/wi/kernel", "encoder/mlp/wi/kernel", "token_embedder/embedding"]

  def state(names, value):
    flat = {f"target/{n}": value(f"target/{n}") for n in names}
    flat["state/step"] = value("state/step")
    flat.update({f"state/param_states/{n}/{s}": value(f"state/param_states/{n}/{s}")
                 for n in names for s in assignment_map.ADAFACTOR_SLOTS})
    return state_utils.traverse_util.unflatten_dict(flat, sep="/")
  t5x_result = state_utils.flatten_state_dict(state_utils.apply_assignment_map(
      state(checkpoint, lambda key: key), state(model, lambda key: "fresh"), rules))
  ours = assignment_map.plan(model, checkpoint, rules, fallback_to_scratch=True)
  for name in model:
    t5x_source = t5x_result.get(f"target/{name}")
    assert (None if t5x_source is None else t5x_source[len("target/"):]) == ours.sources[name], name
  assert ours.step_from_checkpoint == ("state/step" in t5x_result)

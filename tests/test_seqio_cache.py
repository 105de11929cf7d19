"""SeqIO's offline cache: `python -m seqio.scripts.cache_tasks_main` (Apache Beam, DirectRunner) writes
demo_mix's tasks (and one T5-vocabulary task pair from hand-written files); cached examples equal
the uncached ones, and flan_t5x trains from the cache with USE_CACHED_TASKS=True.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import seqio

import flan_tasks
from flan_tasks import config
from flan_t5x import summaries
from tests.conftest import cache_tasks, write_flan_layout

REPO = pathlib.Path(__file__).resolve().parents[1]
# A T5-vocabulary task pair read from two line-aligned files (two source shards for Beam) with
# constant fields, next to the byte-vocabulary demo tasks.
FILE_TASKS = ["code_java2cs_zs", "code_java2cs_fs"]
LONG, SHORT = {"inputs": 512, "targets": 64}, {"inputs": 96, "targets": 64}


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
             XLA_FLAGS="--xla_backend_optimization_level=0")
  env.update(extra)
  return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_spm):
  """(cache dir, data dir, task names) after one `cache_tasks_main` run over demo_mix + FILE_TASKS."""
  data_dir = tmp_path_factory.mktemp("flan_data")
  write_flan_layout(data_dir)
  cache_dir = tmp_path_factory.mktemp("seqio_cache")
  tasks = [t.name for t in seqio.get_mixture_or_task("demo_mix").tasks] + FILE_TASKS
  cache_tasks(cache_dir, tasks, _env(FLAN_DATA_DIR=str(data_dir), FLAN_VOCAB_PATH=tiny_spm))
  previous = seqio.utils.get_global_cache_dirs()
  seqio.add_global_cache_dirs([str(cache_dir)])
  config.configure(data_dir=str(data_dir), vocab_path=tiny_spm)
  yield cache_dir, data_dir, tasks
  seqio.set_global_cache_dirs(previous)
  config.reset()


def _examples(task, lengths, cached):
  ds = task.get_dataset(lengths, split="validation", use_cached=cached, shuffle=False)
  return sorted((tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist()), int(ex["_num_shots"]),
                 int(ex["_template_idx"])) for ex in ds.as_numpy_iterator())


@pytest.mark.slow
def test_every_task_was_cached_with_both_splits(cache):
  cache_dir, _, tasks = cache
  assert len(tasks) == 10 and {"demo_dialogue_zs", "demo_dialogue_fs"} <= set(tasks)
  for name in tasks:
    task = seqio.get_mixture_or_task(name)
    assert task.supports_caching and task.cache_dir == str(cache_dir / name), name
    for split in ("train", "validation"):
      assert task.get_cached_stats(split)["examples"] == task.num_input_examples(split), (name, split)
  # Zero-shot tasks cache token ids; few-shot tasks cache their exemplar blocks (the fit to the
  # inputs length happens after the cache).
  zs_info = json.loads((cache_dir / "demo_code_zs" / "info.validation.json").read_text())
  fs_info = json.loads((cache_dir / "demo_code_fs" / "info.validation.json").read_text())
  assert zs_info["features"]["inputs"]["dtype"] == "int32"
  assert "_fs_blocks" in fs_info["features"] and "inputs" not in fs_info["features"]


@pytest.mark.slow
@pytest.mark.parametrize("lengths", [LONG, SHORT], ids=["long", "short"])
def test_cached_validation_examples_equal_uncached(cache, lengths):
  _, _, tasks = cache
  shots = {}
  for name in tasks:
    task = seqio.get_mixture_or_task(name)
    cached, uncached = _examples(task, lengths, True), _examples(task, lengths, False)
    assert len(uncached) == task.num_input_examples("validation")
    assert cached == uncached, name
    shots[name] = sum(ex[2] for ex in cached)
  if lengths is LONG:  # the comparison covers prompts that hold exemplars
    assert shots["demo_code_fs"] > 50 and shots["code_java2cs_fs"] > 0, shots
  else:  # a shorter inputs length drops exemplars after the cache
    assert shots["demo_code_fs"] < 50, shots


@pytest.mark.slow
def test_flan_t5x_trains_from_the_cache(cache, tmp_path):
  cache_dir, data_dir, _ = cache
  bindings = {
      "MODEL_DIR": f"'{tmp_path}'", "USE_CACHED_TASKS": "True", "TRAIN_STEPS": "2", "BATCH_SIZE": "4",
      "EVAL_PERIOD": "2", "EVAL_STEPS": "1", "TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 32}",
      "utils.SaveCheckpointConfig.period": "2", "network.T5Config.emb_dim": "32",
      "network.T5Config.num_heads": "2", "network.T5Config.head_dim": "16",
      "network.T5Config.mlp_dim": "64"}
  proc = subprocess.run(
      [sys.executable, "-m", "flan_t5x.train", "--gin_file=gin/demo.gin",
       f"--seqio_additional_cache_dirs={cache_dir}", "--verbosity=0"]
      + [f"--gin.{k}={v}" for k, v in bindings.items()],
      cwd=REPO, env=_env(FLAN_DATA_DIR=str(data_dir)), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  for name in ("demo_dialogue_zs", "demo_ner_fs"):  # seqio says where it read each task from
    assert f"'{name}' is cached at {cache_dir / name}" in proc.stderr
  losses = summaries.read_scalars(os.path.join(tmp_path, "train"), "loss")
  assert 2 in losses and all(0 < v < 100 for v in losses.values()), losses
  assert (tmp_path / "checkpoint_2").is_dir() and os.listdir(tmp_path / "validation")


def test_a_missing_cache_dir_is_a_clear_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "flan_t5x.train", "--gin_file=gin/demo.gin",
       f"--seqio_additional_cache_dirs={tmp_path / 'nowhere'}", f"--gin.MODEL_DIR='{tmp_path}'"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert f"--seqio_additional_cache_dirs: not a directory: ['{tmp_path / 'nowhere'}']" in proc.stderr


def test_few_shot_exemplars_do_not_depend_on_order_or_sharding():
  # What makes few-shot tasks cacheable: an example's exemplars are fixed by its row, so Beam's
  # per-shard reads and a shuffled read give the same examples as one ordered read.
  task = seqio.get_mixture_or_task("demo_review_fs")

  def examples(**kwargs):
    ds = task.get_dataset(LONG, split="validation", num_epochs=1, **kwargs)
    return sorted((tuple(ex["inputs"].tolist()), int(ex["_num_shots"])) for ex in ds.as_numpy_iterator())

  ordered = examples(shuffle=False)
  sharded = sorted(examples(shuffle=False, shard_info=seqio.ShardInfo(0, 2))
                   + examples(shuffle=False, shard_info=seqio.ShardInfo(1, 2)))
  assert sharded == ordered and examples(shuffle=True, seed=3) == ordered
  assert sum(n for _, n in ordered) > 0
  assert flan_tasks.task_info("demo_review_fs").variant == "fs"


@pytest.mark.slow
def test_a_mixture_member_with_only_its_cache_stays_a_member(cache, tmp_path):
  # A host that holds the cache but not the raw files (e.g. a TPU pod reading a cache on GCS).
  _, data_dir, _ = cache
  flan_tasks.add_mixture("cached_code_mix", FILE_TASKS)
  config.configure(data_dir=str(tmp_path / "no_data"))
  try:
    mixture = seqio.get_mixture_or_task("cached_code_mix")
    assert sorted(t.name for t in mixture.tasks) == sorted(FILE_TASKS)
    # Rates come from the cache's example counts (5 rows, shared by the zs and fs tasks).
    assert flan_tasks.mixture_rates("cached_code_mix") == {name: 2.5 for name in FILE_TASKS}
    ds = mixture.get_dataset(SHORT, split="train", use_cached=True, shuffle=False, num_epochs=1)
    examples = list(ds.as_numpy_iterator())
    assert examples and all(len(ex["targets"]) for ex in examples)
    with pytest.raises(flan_tasks.DataNotFoundError, match="code_java2cs"):
      mixture.get_dataset(SHORT, split="train", use_cached=False)
    previous = seqio.utils.get_global_cache_dirs()
    seqio.set_global_cache_dirs([])  # neither data nor cache: no member left
    try:
      with pytest.raises(flan_tasks.DataNotFoundError, match="no data for"):
        _ = mixture.tasks
    finally:
      seqio.set_global_cache_dirs(previous)
  finally:
    config.configure(data_dir=str(data_dir))
    seqio.MixtureRegistry.remove("cached_code_mix")

"""flan_t5x.interactive.InteractiveModel: built from gin/demo.gin, resumes a checkpoint exactly, queries."""
import os
import shutil

import jax
import numpy as np
import pytest

from flan_t5x import interactive

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["BATCH_SIZE = 4", "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}",
        "network.T5Config.emb_dim = 32", "network.T5Config.mlp_dim = 64", "network.T5Config.head_dim = 8"]


def _build(model_dir, *bindings, **overrides):
  return interactive.InteractiveModel.from_gin_files(
      ["gin/demo.gin"], [f"MODEL_DIR = '{model_dir}'", *TINY, *bindings], gin_search_paths=[REPO_ROOT],
      **overrides)


@pytest.mark.slow
def test_train_resume_predict_score_evaluate(tmp_path):
  first = _build(tmp_path / "a")
  assert first.step == 0 and first.origin == "fresh parameters" and first.mixture_or_task_name == "demo_mix"
  assert first.trainer.batch_size == 4 and first.model.config.emb_dim == 32
  assert callable(first.trainer.learning_rate_fn)  # gin/demo.gin's warmup schedule
  history = first.train_loop(2, log_period=1, progress=False)
  assert [h["step"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
  assert os.path.isdir(tmp_path / "a" / "checkpoint_2") and os.path.isdir(tmp_path / "a" / "train")
  # A second session on a copy of the step-2 checkpoint continues exactly as the first one does:
  # the same parameters, then the same next batch (the saved input position) and loss.
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  third_step = first.train_loop(1, log_period=1, progress=False)[0]
  first.close()
  second = _build(tmp_path / "b")
  assert second.step == 2 and second.origin == "resumed from step 2"
  params_at_2 = jax.device_get(second.params)
  # INITIAL_CHECKPOINT_PATH (an empty MODEL_DIR): the same parameters, a fresh optimizer.
  initial = str(tmp_path / "a" / "checkpoint_2")
  started = _build(tmp_path / "c", f"INITIAL_CHECKPOINT_PATH = '{initial}'", learning_rate_fn=0.5)
  assert started.origin == f"from {initial}" and started.step == 2
  assert started.trainer.learning_rate_fn == 0.5  # the override replaces the gin file's schedule
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(started.params), params_at_2)
  started.close()
  resumed = second.train_loop(1, log_period=1, progress=False)[0]
  assert resumed["step"] == third_step["step"] == 3
  assert resumed["loss"] == pytest.approx(third_step["loss"], rel=1e-6)
  assert resumed["num_tokens"] == third_step["num_tokens"]

  outputs = second.predict(["Here is a dialogue:\nA: hi\nB: hello\n\nWrite a short summary!", "x"],
                           max_decode_length=8)
  assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
  scores = second.score(["Review: great\nHow many stars?"] * 2, ["5", "1"])
  assert scores.shape == (2,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
  with pytest.raises(TypeError, match="list of strings"):
    second.predict("one string")
  with pytest.raises(ValueError, match="2 inputs but 1 targets"):
    second.score(["a", "b"], ["c"])
  results = second.evaluate("demo_restaurant_zs", max_examples=4, task_feature_lengths={"inputs": 256, "targets": 8},
                            output_dir=str(tmp_path / "eval"))
  assert set(results) == {"demo_restaurant_zs"} and "accuracy" in results["demo_restaurant_zs"]["metrics"]
  assert os.path.isfile(tmp_path / "eval" / "results.json")
  table = interactive.metrics_table({"resumed": results})
  assert ("demo_restaurant_zs", "accuracy") in table.index and list(table.columns) == ["resumed"]
  assert (table.round(2) == table).all().all()  # shown as reports show them, not 6 decimals
  second.close()


def test_from_gin_files_refuses_unknown_overrides(tmp_path):
  with pytest.raises(TypeError, match=r"unknown override\(s\) \['steps'\]"):
    interactive.InteractiveModel.from_gin_files(["gin/demo.gin"], [f"MODEL_DIR = '{tmp_path}'", *TINY],
                                                gin_search_paths=[REPO_ROOT], steps=3)

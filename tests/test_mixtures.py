"""A flan mixture's members are its tasks whose data is on the machine: one member set for all."""
import logging
import shutil

import pytest
import seqio

import flan_tasks
from flan_tasks import config

LENGTHS = {"inputs": 512, "targets": 128}


def test_missing_member_is_left_out_for_every_consumer_and_logged_once(flan_data_dir, caplog):
  shutil.rmtree(flan_data_dir / "conll2003")
  mixture = seqio.get_mixture_or_task("flan_mix")
  with caplog.at_level(logging.WARNING, logger="flan_tasks.mixtures"):
    members = [t.name for t in seqio.get_subtasks(mixture)]
    assert [t.name for t in mixture.tasks] == members  # asked again: same answer, no new log line
  assert "conll2003_zs" not in members and "conll2003_fs" not in members
  assert {"cnn_dailymail_zs", "cnn_dailymail_fs", "samsum_zs"} <= set(members)
  assert {"conll2003_zs", "conll2003_fs"} <= {t.name for t in mixture.listed_tasks}
  warnings = [r for r in caplog.records if "leaving out" in r.getMessage()]
  assert len(warnings) == 1 and "conll2003" in warnings[0].getMessage()
  # T5X's training evaluation and seqio.Evaluator build every member's dataset directly.
  for task in seqio.get_subtasks(mixture):
    for split in ("train", "validation"):
      if split in task.splits:
        assert next(task.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator())
  # Training samples only members.
  ds = mixture.get_dataset(LENGTHS, split="train", shuffle=False, num_epochs=1,
                           passthrough_features=["_task_name"])
  seen = {ex["_task_name"].decode() for ex in ds.take(300).as_numpy_iterator()}
  assert seen and seen <= set(members)
  assert sorted(flan_tasks.mixture_rates("flan_mix")) == sorted(members)


def test_replay_of_a_mixture_with_a_missing_member(flan_data_dir):
  shutil.rmtree(flan_data_dir / "conll2003")
  name = flan_tasks.add_replay_mixture("replay_test", "dialogsum_zs", "flan_mix", 0.1)
  replay = seqio.get_mixture_or_task(name)
  rates = {t.name: replay.get_rate(t) / replay.total_rate for t in replay.tasks}
  assert "conll2003_zs" not in rates
  assert rates["dialogsum_zs"] == pytest.approx(0.9)
  assert sum(rate for task, rate in rates.items() if task != "dialogsum_zs") == pytest.approx(0.1)
  ds = replay.get_dataset(LENGTHS, split="train", shuffle=False, passthrough_features=["_task_name"])
  seen = {ex["_task_name"].decode() for ex in ds.take(200).as_numpy_iterator()}
  assert "dialogsum_zs" in seen and seen <= set(rates)


def test_decision_follows_the_data_settings_and_error_policy_stays(flan_data_dir, tmp_path_factory):
  mixture = seqio.get_mixture_or_task("flan_mix")
  everything = {t.name for t in mixture.tasks}
  assert {"conll2003_zs", "cnn_dailymail_zs"} <= everything
  other = tmp_path_factory.mktemp("other_data")
  shutil.copytree(flan_data_dir, other, dirs_exist_ok=True)
  shutil.rmtree(other / "cnn_dailymail")
  config.configure(data_dir=str(other))
  assert {t.name for t in mixture.tasks} == everything - {"cnn_dailymail_zs", "cnn_dailymail_fs"}
  config.configure(missing_data="error")
  with pytest.raises(flan_tasks.DataNotFoundError, match=r"(?s)flan_mix.*cnn_dailymail.*cnn_dailymail/train.jsonl"):
    seqio.get_subtasks(mixture)


def test_heldout_mixture_needs_only_validation_data(flan_data_dir):
  for path in (flan_data_dir / "dialogsum").glob("*train*"):
    path.unlink()
  members = {t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task("flan_heldout"))}
  assert "dialogsum_zs" in members


def test_no_member_with_data_is_an_error(no_flan_data):
  with pytest.raises(flan_tasks.DataNotFoundError, match="flan_heldout"):
    seqio.get_subtasks(seqio.get_mixture_or_task("flan_heldout"))

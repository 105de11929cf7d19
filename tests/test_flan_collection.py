"""The Flan Collection from local shards, on a generated collection in the real dump layouts.

300 tasks, ~30k rows: flan2021, t0 and dialog as Parquet, niv2 and cot as JSONL
(`<submix>_submix_original/data/train-*.{parquet,jsonl}`), plus a small Open-Orca layout.
"""
import collections
import json

import pytest
import seqio

import flan_tasks
from flan_tasks import flan_collection as fc
from flan_tasks import synthetic_collection
from flan_tasks.readers import BadRowError

# Flan 2022's caps scaled down 100x, so they bite on a 30k-row collection.
CAPS = {"flan2021": 300, "t0": 200, "niv2": 50, "cot": 1000, "dialog": 2000}
LENGTHS = {"inputs": 256, "targets": 64}
BYTES = seqio.ByteVocabulary()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("flan_collection"))
  return synthetic_collection.write_collection(root, 300, 30_000, jsonl_submixes=("niv2", "cot"))


@pytest.fixture(scope="module")
def flan2022(generated):
  return fc.registered(flan_tasks.add_flan_collection(generated.root, "fc_test", caps=CAPS,
                                                      vocabulary=BYTES))


def _capped(counts, submix, style):
  return {t: min(n, CAPS[submix]) for (m, t, s), n in counts.items() if m == submix and s == style}


def test_registers_tasks_with_their_example_counts(generated, flan2022):
  assert flan2022.collection.counts() == generated.counts
  tasks = {t for _, t, _ in generated.counts}
  assert len(tasks) == 300 and set(flan2022.task_names) == tasks
  for task, task_name in flan2022.task_names.items():
    rows = sum(n for (_, t, _), n in generated.counts.items() if t == task)
    assert seqio.get_mixture_or_task(task_name).num_input_examples("train") == rows
  expected_streams = {f"fc_test_{m}_{fc.STYLE_SUFFIX[s]}" for m, styles in fc.FLAN2022_STYLES.items()
                      for s in styles}
  assert set(flan2022.rates) == expected_streams and len(expected_streams) == 14
  for (submix, style), stream in flan2022.stream_of.items():
    expected = sum(_capped(generated.counts, submix, style).values())
    assert seqio.get_mixture_or_task(stream).num_input_examples("train") == expected
  # NIv2's zs_noopt rows exist in the data but Flan 2022 does not mix them.
  assert any(m == "niv2" and s == "zs" for m, _, s in generated.counts)
  assert ("niv2", "zs") not in flan2022.stream_of
  # A single Flan task reads exactly its rows (all template styles).
  task = "cot_dataset_3"
  source = seqio.get_mixture_or_task(flan2022.task_names[task]).source
  rows = list(source.get_dataset("train", shuffle=True, seed=0).as_numpy_iterator())
  assert {r["_task_name"] for r in rows} == {task.encode()}
  assert len(rows) == len({r["inputs"] for r in rows}) == sum(
      n for (_, t, _), n in generated.counts.items() if t == task)


@pytest.mark.slow
def test_mixture_submix_and_style_shares_over_50k_examples(generated, flan2022):
  ds = seqio.get_mixture_or_task("fc_test").get_dataset(
      LENGTHS, split="train", shuffle=True, seed=7, num_epochs=None, try_in_mem_cache=False,
      passthrough_features=["_task_name", "_template_type"])
  submix_of = {t: m for m, t, _ in generated.counts}
  by_submix, by_style, by_task = collections.Counter(), collections.Counter(), collections.Counter()
  for ex in ds.take(50_000).as_numpy_iterator():
    submix = submix_of[ex["_task_name"].decode()]
    by_submix[submix] += 1
    by_style[(submix, ex["_template_type"].decode())] += 1
    by_task[ex["_task_name"].decode()] += 1
  total = sum(by_submix.values())
  assert total == 50_000
  for submix, weight in fc.FLAN2022_WEIGHTS.items():
    assert abs(by_submix[submix] / total - weight) < 0.01, (submix, by_submix)
    styles = fc.FLAN2022_STYLES[submix]
    for style in styles:
      assert abs(by_style[(submix, style)] / total - weight / len(styles)) < 0.01, by_style
  assert by_style[("niv2", "zs")] == 0
  # After caps: within a stream a task's share is min(n, cap) / sum(min(n, cap)). The capped
  # tasks of each submix together get their expected share (a few % of samples each).
  for submix in ("t0", "niv2"):
    counts = {t: sum(n for (m, tt, s), n in generated.counts.items() if tt == t and m == submix
                     and s in fc.FLAN2022_STYLES[submix]) for t in submix_of if submix_of[t] == submix}
    capped = {t for t, n in counts.items() if any(
        n2 > CAPS[submix] for (m, tt, s), n2 in generated.counts.items() if tt == t)}
    assert capped, f"the generated {submix} submix has no capped task"
    expected = sum(flan2022.kept[(submix, t, s)] for t in capped for s in fc.FLAN2022_STYLES[submix]
                   if (submix, t, s) in flan2022.kept) / sum(
        v for (m, _, s), v in flan2022.kept.items() if m == submix)
    seen = sum(by_task[t] for t in capped) / by_submix[submix]
    assert abs(seen - expected) < 0.03, (submix, seen, expected)


def test_excluded_tasks_never_appear_and_held_out_data_does_not_leak(generated):
  name = flan_tasks.add_flan_collection(
      generated.root, "fc_heldout", caps=CAPS, vocabulary=BYTES,
      exclude_tasks=["t0_dataset_1_*"], exclude_categories=["Summarization"],
      categories=generated.categories, held_out=["flan_heldout"])
  info = fc.registered(name)
  excluded = set(info.excluded)
  assert "task1290_xsum_summarization" in excluded  # XSum is in flan_heldout
  assert "task1572_dialogsum_summary" in excluded  # DialogSum too
  assert {f"t0_dataset_1_prompt_{i}" for i in range(4)} <= excluded
  assert "flan_dataset_0:1.0.0" in excluded and "flan_dataset_1:1.0.0" not in excluded
  emitted = set().union(*(fc._EMITS[s] for s in info.rates))  # pylint: disable=protected-access
  assert emitted and not emitted & excluded
  # Every row the mixture's streams produce in a full epoch (JSONL niv2 and Parquet t0).
  for stream in ("fc_heldout_niv2_zsopt", "fc_heldout_t0_fsopt"):
    source = seqio.get_mixture_or_task(stream).source
    seen = {r["_task_name"].decode() for r in
            source.get_dataset("train", shuffle=True, seed=1).as_numpy_iterator()}
    assert seen and not seen & excluded
  fc.check_no_leak(name, ["flan_heldout"])
  # The unfiltered collection mixed with user data leaks XSum and DialogSum: refused.
  flan_tasks.add_flan_collection(generated.root, "fc_unfiltered", caps=CAPS, vocabulary=BYTES)
  with pytest.raises(flan_tasks.HeldOutLeakError, match=r"(?s)xsum.*flan_heldout"):
    flan_tasks.add_weighted_mixture("fc_bad_mix", {"fc_unfiltered": 0.9, "demo_review_zs": 0.1},
                                    held_out=["flan_heldout"])
  assert "fc_bad_mix" not in seqio.MixtureRegistry.names()
  flan_tasks.add_weighted_mixture("fc_ok_mix", {"fc_heldout": 0.9, "demo_review_zs": 0.1},
                                  held_out=["flan_heldout", "demo_heldout"])


def test_two_hosts_read_every_row_exactly_once_per_epoch(generated):
  everything = {m: 10**9 for m in fc.SUBMIXES}
  name = flan_tasks.add_flan_collection(generated.root, "fc_all", caps=everything,
                                        vocabulary=BYTES, styles={"niv2": ("zs",), "t0": ("fs_opt",)},
                                        weights={"niv2": 0.5, "t0": 0.5})
  info = fc.registered(name)
  for (submix, style), stream in info.stream_of.items():
    source = seqio.get_mixture_or_task(stream).source
    assert len(source.list_shards("train")) == 4
    seen = collections.Counter()
    for host in range(2):
      ds = source.get_dataset("train", shuffle=True, seed=3,
                              shard_info=seqio.ShardInfo(index=host, num_shards=2))
      seen.update(r["inputs"] for r in ds.as_numpy_iterator())
    expected = sum(n for (m, _, s), n in generated.counts.items() if m == submix and s == style)
    assert len(seen) == expected and set(seen.values()) == {1}, (submix, style)


def test_order_is_deterministic_for_a_seed_and_changes_with_the_epoch(flan2022):
  source = seqio.get_mixture_or_task(flan2022.stream_of[("t0", "zs_opt")]).source

  def first(seed, epochs=1):
    ds = source.get_dataset("train", shuffle=True, seed=seed).repeat(epochs)
    return [r["inputs"] for r in ds.as_numpy_iterator()]

  one, again, other = first(11), first(11), first(12)
  assert one == again and one != other
  two_epochs = first(11, 2)
  assert two_epochs[:len(one)] == one and two_epochs[len(one):] != one  # a new order each epoch


def test_engine_input_position_resumes_the_collection_stream(generated):
  from flan_t5x import data  # pylint: disable=g-import-not-at-top
  name = flan_tasks.add_flan_collection(generated.root, "fc_resume", caps=CAPS, vocabulary=BYTES,
                                        weights={"niv2": 0.6, "t0": 0.4},
                                        styles={"niv2": ("zs_opt",), "t0": ("fs",)})
  config = data.DatasetConfig(name, {"inputs": 128, "targets": 32}, "train", batch_size=8,
                              shuffle=True, seed=0, pack=True)
  converter = seqio.EncDecFeatureConverter(pack=True)

  def iterator():
    return data.InputIterator(data.get_dataset(config, converter, seed=0, num_epochs=None))

  first = iterator()
  for _ in range(5):
    next(first)
  state = first.state()
  assert state is not None and sum(len(v) for v in state.values()) < 20_000_000
  expected = [next(first) for _ in range(3)]
  resumed = iterator()
  resumed.restore(state)
  for want in expected:
    got = next(resumed)
    assert all((got[k] == want[k]).all() for k in want)


def test_mixture_returns_the_features_of_a_seqio_mixture(flan2022):
  # The mixture mixes raw rows and tokenizes once; what it returns is still a SeqIO mixture's:
  # the output features, plus passthrough features and pretokenized copies when asked.
  mixture = seqio.get_mixture_or_task("fc_test")
  assert isinstance(mixture, fc.CollectionMixture) and len(mixture.tasks) == 14

  def keys(**kwargs):
    ds = mixture.get_dataset(LENGTHS, split="train", shuffle=True, seed=0, **kwargs)
    return [set(ex) for ex in ds.take(3).as_numpy_iterator()]

  assert keys() == [{"inputs", "targets"}] * 3
  assert keys(passthrough_features=["_task_name", "_num_shots"]) == [
      {"inputs", "targets", "_task_name", "_num_shots"}] * 3
  assert keys(passthrough_features=["inputs_pretokenized"]) == [
      {"inputs", "targets", "inputs_pretokenized"}] * 3
  assert keys(copy_pretokenized=True) == [
      {"inputs", "targets", "inputs_pretokenized", "targets_pretokenized"}] * 3

  def first(seed):
    ds = mixture.get_dataset(LENGTHS, split="train", shuffle=True, seed=seed)
    return [ex["inputs"].tolist() for ex in ds.take(30).as_numpy_iterator()]

  one = first(5)
  assert one == first(5) and one != first(6)  # the mix and the order are a function of the seed


def test_null_text_in_parquet_names_file_and_row(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "c" / "cot_submix_original" / "data"
  folder.mkdir(parents=True)
  rows = 10
  pq.write_table(pa.table({
      "inputs": [f"q{i}" if i != 7 else None for i in range(rows)],
      "targets": ["a"] * rows, "task_name": ["cot_x"] * rows,
      "template_type": ["zs_opt"] * rows}), folder / "train.parquet", row_group_size=4)
  flan_tasks.add_flan_collection(str(tmp_path / "c"), "fc_null", vocabulary=BYTES)
  source = seqio.get_mixture_or_task("fc_null_cot_zsopt").source
  with pytest.raises(Exception, match=r"train\.parquet:7: column 'inputs' is null"):
    list(source.get_dataset("train", shuffle=False).as_numpy_iterator())


def test_open_orca_layout_and_clear_errors(tmp_path):
  orca = synthetic_collection.write_collection(str(tmp_path / "orca"), 40, 3_000, layout="open_orca",
                                               files_per_folder=2)
  name = flan_tasks.add_flan_collection(orca.root, "fc_orca", vocabulary=BYTES)
  info = fc.registered(name)
  assert info.collection.layout.name == "open_orca"
  assert info.collection.counts() == orca.counts
  rows = list(seqio.get_mixture_or_task("fc_orca_cot_fsopt").source.get_dataset(
      "train", shuffle=False).as_numpy_iterator())
  assert rows and all(0 <= r["_template_idx"] < 10 and r["_template_type"] == b"fs_opt" for r in rows)

  bad = tmp_path / "bad" / "cot_submix_original" / "data"
  bad.mkdir(parents=True)
  good = {"inputs": "q", "targets": "a", "task_source": "CoT", "task_name": "cot_x",
          "template_type": "zs_opt"}
  (bad / "train.jsonl").write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
  with pytest.raises(BadRowError, match=r"train\.jsonl:2: invalid JSON"):
    flan_tasks.add_flan_collection(str(tmp_path / "bad"), "fc_bad", vocabulary=BYTES)
  (bad / "train.jsonl").write_text(json.dumps(dict(good, template_type="cot")) + "\n",
                                   encoding="utf-8")
  with pytest.raises(BadRowError, match=r"train\.jsonl:1: template type 'cot'"):
    flan_tasks.add_flan_collection(str(tmp_path / "bad"), "fc_bad", vocabulary=BYTES)
  with pytest.raises(FileNotFoundError, match="no Flan Collection shards"):
    flan_tasks.add_flan_collection(str(tmp_path), "fc_none", vocabulary=BYTES)


def test_inspect_on_the_collection(generated, tiny_spm, capsys, monkeypatch):
  from flan_tasks import config, inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("FLAN_COLLECTION_DIR", generated.root)
  config.configure(vocab_path=tiny_spm)
  try:  # the CLI's main, in process (a child would spend most of its time importing TensorFlow)
    code = inspect_lib.main(["flan2022", "--n", "1", "--sample", "150", "--inputs_length", "256",
                             "--targets_length", "64"])
  finally:
    config.reset()
  out = capsys.readouterr().out
  assert code == 0, out[-3000:]
  assert "300 Flan tasks in 20 files (submix_original layout)" in out
  assert "flan2021    40.00%" in out and "dialog       3.00%" in out
  assert "flan2022_niv2_zsopt" in out and "sampled examples per submix" in out
  assert "p50=" in out and "INPUTS:" in out


def test_flan2022_gin_file_registers_the_mixture(generated, tiny_spm):
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  from flan_tasks import config  # pylint: disable=g-import-not-at-top
  gin.clear_config(clear_constants=True)
  config.configure(vocab_path=tiny_spm)
  try:
    gin_utils.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/flan2022.gin"],
                        [f"FLAN_COLLECTION_DIR = '{generated.root}'"], finalize=False)
    assert flan_tasks.add_flan_collection() == "flan2022"
  finally:
    gin.clear_config(clear_constants=True)
    config.reset()
  info = fc.registered("flan2022")
  assert "task1290_xsum_summarization" in info.excluded  # held_out = ['flan_heldout']
  assert info.rates["flan2022_flan2021_zsopt"] == pytest.approx(0.1)

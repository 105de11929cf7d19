"""Shared fixtures: hand-written raw files in every built-in dataset's layout, and a tiny vocabulary.

Nothing here downloads: the SentencePiece model is trained on the hand-written text itself, so the
real SeqIO pipeline (formatting, tokenization, postprocessing, metrics) runs on a fresh machine.
"""
import csv
import importlib.util
import json
import os
import pathlib
import shutil
import sys

import pytest

# flan_t5x's first import keeps JAX on the CPU of a host with no TPU or GPU when libtpu (the test
# extra's [tpu], for flan_t5x.plan) is installed; test processes and their children get the same.
import flan_t5x  # noqa: F401  pylint: disable=unused-import

# `@pytest.mark.hf`: needs torch + transformers (run in the hf_peer child). Skipped without them,
# except under FLAN_REQUIRE_HF=1 (`make test-hf`, CI), where a missing install fails the test.
# `@pytest.mark.hf(requires_torch=False)`: part of `make test-hf` but runs without torch too.
# `@pytest.mark.hf(peft=True)`: needs peft as well (the bench extra installs it).
HAS_TORCH_PEER = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
HAS_PEFT = HAS_TORCH_PEER and importlib.util.find_spec("peft") is not None
REQUIRE_HF = os.environ.get("FLAN_REQUIRE_HF") == "1"


def pytest_configure(config):
  config.addinivalue_line("markers", "hf: Hugging Face parity test (torch peer); `make test-hf` runs these")
  config.addinivalue_line("markers", "slow: an end-to-end run of a job, a README command or a multi-process "
                          "scenario (about 20 s or more on 2 cores); `make test-slow` runs these, `make test` not")


def pytest_runtest_setup(item):
  marker = item.get_closest_marker("hf")
  if marker is None or not marker.kwargs.get("requires_torch", True):
    return
  if HAS_TORCH_PEER and (HAS_PEFT or not marker.kwargs.get("peft", False)):
    return
  if REQUIRE_HF:
    pytest.fail(f"FLAN_REQUIRE_HF=1 but torch/transformers/peft are not installed in {sys.executable}: "
                "pip install -e '.[test,bench]' (make test-hf does)", pytrace=False)
  pytest.skip("torch/transformers/peft not installed (pip install -e '.[bench]'; make test-hf)")


SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
SHARED_DATASETS = SHARED / "datasets"
SHARED_SPIECE = SHARED / "checkpoints" / "t5-spiece" / "spiece.model"

DIALOGUES = [
    {"dialogue": "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you "
                 "tomorrow :-)", "summary": "Amanda baked cookies and will bring Jerry some tomorrow."},
    {"dialogue": "Olivia: Who are you voting for in this election?\nOliver: Liberals as always.\n"
                 "Olivia: Me too!!", "summary": "Olivia and Oliver are voting for liberals."},
    {"dialogue": "Tim: Hi, what's up?\nKim: Bad mood tbh, I was going to do lots of stuff but ended "
                 "up procrastinating\nTim: What did you plan on doing?",
     "summary": "Kim may try the pomodoro technique recommended by Tim to get more stuff done."},
    {"dialogue": "Edward: Rachel, I think I'm in love with Bella..\nRachel: Dont say anything else.."
                 "\nEdward: What do you mean??", "summary": "Rachel wants Edward to keep quiet."},
    {"dialogue": "Sam: is Mike coming today?\nLara: no he is ill\nSam: pity", "summary":
     "Mike is ill and is not coming today."},
]
ARTICLES = [
    {"document": "The city council approved a new budget on Tuesday that raises spending on parks "
                 "and public transport by ten percent.", "summary": "Council raises park and "
                 "transport spending."},
    {"document": "Heavy rain caused flooding in several northern towns, forcing hundreds of "
                 "residents to leave their homes overnight.", "summary": "Floods force hundreds "
                 "from homes in the north."},
    {"document": "A local football club signed a young striker from the academy to a three year "
                 "professional contract.", "summary": "Club signs academy striker."},
    {"document": "Scientists reported a new species of frog found in the mountain forests during "
                 "a survey last spring.", "summary": "New frog species found in mountains."},
    {"document": "The museum will reopen next month after a two year renovation of its main hall.",
     "summary": "Museum reopens after renovation."},
]
REVIEWS = [("Love this dress", "Absolutely wonderful, silky and comfortable.", "5"),
           ("Too small", "Runs small, had to return it.", "2"),
           ("", "The color is nice but the fabric is thin.", "3"),
           ("Great buy", "Fits well and looks great with jeans.", "4"),
           ("Awful", "Fell apart after one wash.", "1"),
           ("Empty text row", "", "4")]
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
visited VBD B-VP O
London NNP B-NP B-LOC
. . O O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
weather NN I-NP O
was VBD B-VP O
fine JJ B-ADJP O
. . O O

Germany NNP B-NP B-LOC
's POS B-NP O
representative NN I-NP O
Werner NNP I-NP B-PER
Zwingmann NNP I-NP I-PER
"""
JAVA = ["public int size() { return count; }",
        "public void clear() { list.clear(); }",
        "public boolean isEmpty() { return size() == 0; }",
        "public String getName() { return name; }",
        "public void setName(String n) { name = n; }"]
CSHARP = ["public int Size() { return count; }",
          "public void Clear() { list.Clear(); }",
          "public bool IsEmpty() { return Size() == 0; }",
          "public string GetName() { return name; }",
          "public void SetName(string n) { name = n; }"]


def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_flan_layout(root: pathlib.Path) -> None:
  """Writes train and validation files of every built-in dataset under `root` (FLAN_DATA_DIR)."""
  samsum = [dict(r, id=str(i)) for i, r in enumerate(DIALOGUES)]
  (root / "samsum").mkdir(parents=True, exist_ok=True)
  for name in ("train.json", "val.json"):
    (root / "samsum" / name).write_text(json.dumps(samsum, indent=2), encoding="utf-8")
  for split in ("train", "dev"):
    _write_jsonl(root / "dialogsum" / f"dialogsum.{split}.jsonl",
                 [{"fname": f"{split}_{i}", **r, "topic": "chat"} for i, r in enumerate(DIALOGUES)])
  for split in ("train", "validation"):
    _write_jsonl(root / "cnn_dailymail" / f"{split}.jsonl",
                 [{"article": a["document"], "highlights": a["summary"]} for a in ARTICLES])
    _write_jsonl(root / "xsum" / f"{split}.jsonl", ARTICLES)
    _write_jsonl(root / "amazon_reviews" / f"{split}.jsonl",
                 [{"review": f"{t}. {x}", "rating": int(s)} for t, x, s in REVIEWS if x])
  (root / "review_rating").mkdir(parents=True, exist_ok=True)
  for name in ("train.csv", "valid.csv"):
    with open(root / "review_rating" / name, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["row_id", "Clothing ID", "Age", "Title", "Review Text", "Rating"])
      for i, (title, text, stars) in enumerate(REVIEWS):
        writer.writerow([i, 100 + i, 30, title, text, stars])
  for folder, files in (("conll2003", ("train.txt", "valid.txt")),
                        ("wikiann", ("train.txt", "validation.txt"))):
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in files:
      (root / folder / name).write_text(CONLL, encoding="utf-8")
  code = root / "code_trans_java_cs"
  code.mkdir(parents=True, exist_ok=True)
  for split in ("train", "valid"):
    (code / f"{split}.java-cs.txt.java").write_text("\n".join(JAVA) + "\n", encoding="utf-8")
    (code / f"{split}.java-cs.txt.cs").write_text("\n".join(CSHARP) + "\n", encoding="utf-8")


def cache_tasks(output_dir, tasks, env) -> None:
  """Runs SeqIO's `python -m seqio.scripts.cache_tasks_main` (Beam DirectRunner) over `tasks`."""
  import subprocess  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=flan_tasks",
       f"--tasks={','.join(tasks)}", f"--output_cache_dir={output_dir}", "--min_shards=2"],
      cwd=pathlib.Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
      timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]


def all_raw_text() -> str:
  parts = [d["dialogue"] + " " + d["summary"] for d in DIALOGUES]
  parts += [a["document"] + " " + a["summary"] for a in ARTICLES]
  parts += [" ".join(r) for r in REVIEWS] + [CONLL] + JAVA + CSHARP
  from flan_tasks import code_escape, templates  # pylint: disable=g-import-not-at-top
  parts += [code_escape.escape(c) for c in JAVA + CSHARP]  # what the code tasks tokenize
  for family in templates.family_names():
    parts += [t for pair in templates.get_family(family).templates for t in pair]
  return "\n".join(parts)


@pytest.fixture(scope="session")
def tiny_spm(tmp_path_factory) -> str:
  """A SentencePiece model (T5 ids: pad 0, eos 1, unk 2) trained on the hand-written text."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("spm")
  corpus = root / "corpus.txt"
  corpus.write_text(all_raw_text(), encoding="utf-8")
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(root / "tiny"), vocab_size=300, model_type="unigram",
      character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
      num_threads=1, minloglevel=2)
  return str(root / "tiny.model")


@pytest.fixture()
def flan_data_dir(tmp_path, tiny_spm):
  """FLAN_DATA_DIR with hand-written files, and the tiny vocabulary configured; reset afterwards."""
  from flan_tasks import config  # pylint: disable=g-import-not-at-top
  write_flan_layout(tmp_path)
  config.configure(data_dir=str(tmp_path), vocab_path=tiny_spm,
                   tfds_data_dir=str(tmp_path / "no_tfds"))
  yield tmp_path
  config.reset()


@pytest.fixture()
def no_flan_data(tmp_path):
  from flan_tasks import config  # pylint: disable=g-import-not-at-top
  config.configure(data_dir=str(tmp_path / "empty"), tfds_data_dir=str(tmp_path / "no_tfds"))
  yield tmp_path
  config.reset()


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Not part of a user's copy of the root: environments, history, outputs, and what the tests read
# from the checkout itself.
_NOT_IN_REPO_COPY = {".venv", ".git", "runs", "docs", "tests", "notebooks", "build", "site", ".cache"}


def copy_repo_root(dest: pathlib.Path, keep: tuple[str, ...] = ()) -> pathlib.Path:
  """The repository root as a user has it, for running README commands as written (relative paths);
  `keep`: top-level folders to copy besides (e.g. "notebooks")."""
  def ignored(directory, names):
    at_root = directory == str(REPO_ROOT)
    return [n for n in names if (at_root and n in _NOT_IN_REPO_COPY and n not in keep) or n == "__pycache__"
            or n.endswith(".egg-info") or n.endswith(".out.ipynb")
            or (directory == str(REPO_ROOT / "bench") and n == "results")]
  shutil.copytree(REPO_ROOT, dest, ignore=ignored)
  return dest


@pytest.fixture()
def repo_copy(tmp_path):
  return copy_repo_root(tmp_path / "repo")

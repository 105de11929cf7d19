"""Writes a synthetic Flan Collection in a real dump layout, for tests and benchmarks.

Task names follow each submix's naming (`glue_mnli:2.0.0`, `task1290_xsum_summarization`,
`adversarial_qa_dbert_answer_the_following_q`, `cot_gsm8k`, `wiki_dialog`), row counts are
heavy-tailed so the Flan 2022 caps bite, every template style appears, and every input is unique
(it carries its task and row number) so tests can check exactly-once reading.

    python -m flan_tasks.synthetic_collection OUT_DIR --rows 1000000 [--layout submix_original]
"""
import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

# Raw template-type values as the dumps write them.
RAW_STYLE = {"zs_opt": "zs_opt", "zs": "zs_noopt", "fs_opt": "fs_opt", "fs": "fs_noopt"}
SOURCE_NAME = {"flan2021": "Flan2021", "t0": "T0", "niv2": "NIv2", "cot": "CoT", "dialog": "Dialog"}
FOLDER_SUBMIX = {"flan2021": "flan", "t0": "t0", "niv2": "niv2", "cot": "cot", "dialog": "dialog"}
# Data styles per submix (NIv2 also gets zs_noopt rows, which the Flan 2022 mixture leaves out).
DATA_STYLES = {"flan2021": ("zs_opt", "zs", "fs_opt", "fs"), "t0": ("zs_opt", "zs", "fs_opt", "fs"),
               "niv2": ("zs_opt", "fs_opt", "zs"), "cot": ("zs_opt", "fs_opt"),
               "dialog": ("zs_opt", "fs_opt")}
TASK_SHARE = {"flan2021": 0.15, "t0": 0.25, "niv2": 0.5, "cot": 0.05, "dialog": 0.05}
_WORDS = ("the a river model question answer summary dialogue review movie city house paper "
          "team player story reason because however therefore example option true false yes no "
          "sentence premise hypothesis translate french german number count add total result "
          "café Straße naïve 東京 überall").split()  # non-ASCII text, as in the real collection


def _task_name(submix: str, i: int) -> str:
  if submix == "flan2021":
    return f"flan_dataset_{i}:1.0.0"
  if submix == "t0":
    return f"t0_dataset_{i // 4}_prompt_{i % 4}"
  if submix == "niv2":
    return f"task{1000 + i}_niv2_dataset_{i}_answer_generation"
  if submix == "cot":
    return f"cot_dataset_{i}"
  return f"dialog_dataset_{i}"


@dataclasses.dataclass
class Generated:
  """What was written: rows per (submix, task, style), the files and the special tasks' names."""
  root: str
  counts: Dict[Tuple[str, str, str], int]
  files: Sequence[str]
  categories: Dict[str, str]


def plan_tasks(num_tasks: int, num_rows: int, seed: int) -> Dict[Tuple[str, str, str], int]:
  """{(submix, task, style): rows}, heavy-tailed per task, summing to about num_rows."""
  rng = np.random.default_rng(seed)
  counts = {}
  for submix, share in TASK_SHARE.items():
    n_tasks = max(2, int(round(num_tasks * share)))
    sizes = rng.lognormal(0.0, 1.2, n_tasks)
    sizes = np.maximum(4, np.round(sizes / sizes.sum() * num_rows * share)).astype(int)
    names = [_task_name(submix, i) for i in range(n_tasks)]
    if submix == "niv2":  # held-out candidates: an XSum task and a dialogue summarization task
      names[0], names[1] = "task1290_xsum_summarization", "task1572_dialogsum_summary"
    for name, size in zip(names, sizes):
      styles = DATA_STYLES[submix]
      split = rng.multinomial(size, np.ones(len(styles)) / len(styles))
      for style, n in zip(styles, split):
        if n:
          counts[(submix, name, style)] = int(n)
  return counts


def _texts(rng, count: int, n_words: int):
  """`count` random texts of `n_words` words (drawn at once: a million rows take seconds)."""
  words = np.asarray(_WORDS, dtype=object)[rng.integers(0, len(_WORDS), (count, n_words))]
  return [" ".join(w) for w in words]


def _rows(counts, seed: int, words: int):
  """Yields (submix, style, row dict) in a random order."""
  rng = np.random.default_rng(seed + 1)
  keys = [k for k, n in counts.items() for _ in range(n)]
  order = rng.permutation(len(keys))
  inputs, targets = _texts(rng, len(keys), words), _texts(rng, len(keys), max(2, words // 4))
  template_idx = rng.integers(0, 10, len(keys))
  serial: Dict[Tuple[str, str, str], int] = {}
  for j, i in enumerate(order):
    submix, task, style = keys[i]
    number = serial.get(keys[i], 0)
    serial[keys[i]] = number + 1
    yield submix, style, {
        "inputs": f"{task} {style} {number}: {inputs[j]}",
        "targets": targets[j],
        "task_source": SOURCE_NAME[submix], "task_name": task,
        "template_type": RAW_STYLE[style], "template_idx": int(template_idx[j])}


def _open_orca_row(row: Mapping) -> Dict:
  return {"inputs": row["inputs"], "targets": row["targets"], "_template_idx": row["template_idx"],
          "_task_source": row["task_source"], "_task_name": row["task_name"],
          "_template_type": row["template_type"]}


def _submix_original_row(row: Mapping) -> Dict:
  return {k: row[k] for k in ("inputs", "targets", "task_source", "task_name", "template_type")}


def write_collection(root: str, num_tasks: int = 300, num_rows: int = 30_000, *,
                     layout: str = "submix_original", files_per_folder: int = 4,
                     jsonl_submixes: Sequence[str] = (), row_group_rows: int = 512,
                     words: int = 12, seed: int = 0) -> Generated:
  """Writes the collection under `root`; submixes in `jsonl_submixes` as JSONL, the rest Parquet."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  counts = plan_tasks(num_tasks, num_rows, seed)
  buckets: Dict[Tuple[str, str], list] = {}
  for submix, style, row in _rows(counts, seed, words):
    if layout == "submix_original":
      folder = f"{submix}_submix_original/data"
      buckets.setdefault((folder, submix), []).append(_submix_original_row(row))
    elif layout == "open_orca":
      folder = f"{FOLDER_SUBMIX[submix]}_{RAW_STYLE[style].replace('_', '')}_data"
      buckets.setdefault((folder, submix), []).append(_open_orca_row(row))
    else:
      raise ValueError(f"unknown layout {layout!r}")
  files = []
  for (folder, submix), rows in sorted(buckets.items()):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    parts = np.array_split(np.arange(len(rows)), files_per_folder)
    for k, part in enumerate(p for p in parts if len(p)):
      chunk = [rows[i] for i in part]
      if submix in jsonl_submixes:
        path = os.path.join(root, folder, f"train-{k:05d}-of-{files_per_folder:05d}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
          f.writelines(json.dumps(r) + "\n" for r in chunk)
      else:
        name = (f"part.{k}.parquet" if layout == "open_orca" else
                f"train-{k:05d}-of-{files_per_folder:05d}.parquet")
        path = os.path.join(root, folder, name)
        table = pa.Table.from_pylist(chunk)
        pq.write_table(table, path, row_group_size=row_group_rows)
      files.append(path)
  categories = {_task_name("flan2021", i): "Summarization" if i % 5 == 0 else "Natural Language Inference"
                for i in range(num_tasks)}
  categories["task1572_dialogsum_summary"] = "Dialogue Summarization"
  categories["task1290_xsum_summarization"] = "Summarization"
  return Generated(root, counts, files, categories)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out_dir")
  parser.add_argument("--tasks", type=int, default=300)
  parser.add_argument("--rows", type=int, default=30_000)
  parser.add_argument("--layout", default="submix_original", choices=("submix_original", "open_orca"))
  parser.add_argument("--files_per_folder", type=int, default=4)
  parser.add_argument("--words", type=int, default=12)
  args = parser.parse_args(argv)
  generated = write_collection(args.out_dir, args.tasks, args.rows, layout=args.layout,
                               files_per_folder=args.files_per_folder, words=args.words)
  print(f"wrote {sum(generated.counts.values())} rows of "
        f"{len({t for _, t, _ in generated.counts})} tasks in {len(generated.files)} files "
        f"under {args.out_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

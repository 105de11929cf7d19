"""The built-in FLAN datasets: local file layouts (as in ../shared/datasets) and TFDS fallbacks.

Each dataset reads `<FLAN_DATA_DIR>/<folder>/<file>` when present, else its TFDS copy. Field mappers
turn raw rows into the family's fields and raise BadRowError (file:line) for rows they cannot use.
"""
import dataclasses
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

from flan_tasks import code_escape, readers, sources
from flan_tasks.readers import BadRowError, Row


def _text(row: Row, key: str, allow_empty: bool = False) -> str:
  value = row.values.get(key)
  if not isinstance(value, str) or (not allow_empty and not value.strip()):
    raise BadRowError(row.path, row.line, f"field {key!r}: expected a non-empty string, got "
                      f"{value!r:.60}")
  return value


def _dialogue_row(row: Row) -> Optional[Dict[str, str]]:
  dialogue = _text(row, "dialogue", allow_empty=True).replace("\r\n", "\n").strip()
  if not dialogue:
    return None
  return {"dialogue": dialogue, "summary": _text(row, "summary").strip()}


def _news_row(document_key: str, summary_key: str):
  def to_fields(row: Row) -> Dict[str, str]:
    return {"document": _text(row, document_key).strip(), "summary": _text(row, summary_key).strip()}
  return to_fields


def _rating(row: Row, key: str) -> str:
  raw = str(row.values.get(key, "")).strip()
  if raw not in ("1", "2", "3", "4", "5"):
    raise BadRowError(row.path, row.line, f"field {key!r}: expected a rating 1-5, got {raw!r}")
  return raw


def _clothing_row(row: Row) -> Optional[Dict[str, str]]:
  missing = [c for c in ("Title", "Review Text", "Rating") if c not in row.values]
  if missing:  # a wrong header would otherwise read as rows with empty text, all dropped
    raise BadRowError(row.path, row.line, f"missing column(s) {missing}; the header has {sorted(row.values)}")
  text = (row.values.get("Review Text") or "").strip()
  if not text:
    return None
  title = (row.values.get("Title") or "").strip()
  review = f"{title}. {text}" if title else text
  return {"review": review, "rating": _rating(row, "Rating")}


def _review_jsonl_row(row: Row) -> Dict[str, str]:
  return {"review": _text(row, "review").strip(), "rating": _rating(row, "rating")}


def _ner_row(row: Row) -> Dict[str, str]:
  entities = readers.entities_from_iob(row.values["tokens"], row.values["tags"],
                                       (row.path, row.line))
  return {"sentence": " ".join(row.values["tokens"]),
          "entities": readers.format_entities(entities)}


def _code_row(source_key: str, target_key: str):
  """Code with the characters T5's vocabulary lacks escaped (flan_tasks.code_escape)."""
  def to_fields(row: Row) -> Dict[str, str]:
    return {"source_code": code_escape.escape(_text(row, source_key).strip()),
            "target_code": code_escape.escape(_text(row, target_key).strip())}
  return to_fields


# -- TFDS mappings ------------------------------------------------------------------------------------
def _tfds_dialogue(ex, info):
  del info
  return {"dialogue": tf.strings.strip(tf.strings.regex_replace(ex["dialogue"], "\r\n", "\n")),
          "summary": ex["summary"]}


def _tfds_news(document_key, summary_key):
  def to_fields(ex, info):
    del info
    return {"document": ex[document_key], "summary": ex[summary_key]}
  return to_fields


def _tfds_amazon(ex, info):
  del info
  data = ex["data"]
  return {"review": data["review_body"], "rating": tf.strings.as_string(data["star_rating"])}


def _tfds_ner(tags_key):
  def to_fields(ex, info):
    names = tf.constant(info.features[tags_key].feature.names)
    tags = tf.gather(names, ex[tags_key])

    def entities(tokens, tag_values):
      decode = lambda xs: [x.decode("utf-8") for x in xs.numpy()]
      return readers.format_entities(readers.entities_from_iob(decode(tokens), decode(tag_values)))

    text = tf.py_function(entities, [ex["tokens"], tags], tf.string)
    text.set_shape([])
    return {"sentence": tf.strings.reduce_join(ex["tokens"], separator=" "), "entities": text}
  return to_fields


@dataclasses.dataclass(frozen=True)
class BuiltinDataset:
  name: str
  family: str
  fields: Tuple[str, ...]
  files: Optional[sources.FileSpec]
  tfds: Optional[sources.TfdsSpec]
  held_out: bool
  constant_fields: Tuple[Tuple[str, str], ...] = ()
  postprocess: Optional[Callable] = None  # None: the family's

  def source(self) -> sources.InstructionDataSource:
    return sources.InstructionDataSource(self.name, self.fields, files=self.files,
                                         tfds_spec=self.tfds)


_DIALOGUE = ("dialogue", "summary")
_NEWS = ("document", "summary")
_REVIEW = ("review", "rating")
_NER = ("sentence", "entities")
_CODE = ("source_code", "target_code")
_JSONL = sources.per_file(readers.read_jsonl)
_CONLL = sources.per_file(readers.read_conll)


def _code_files(source_ext, target_ext, source_key, target_key):
  def read(paths):
    return readers.read_parallel_lines(paths, (source_key, target_key))
  return sources.FileSpec(
      folder="code_trans_java_cs",
      split_files={"train": (f"train.java-cs.txt.{source_ext}", f"train.java-cs.txt.{target_ext}"),
                   "validation": (f"valid.java-cs.txt.{source_ext}",
                                  f"valid.java-cs.txt.{target_ext}")},
      read=read, to_fields=_code_row(source_key, target_key))


_SAMSUM_FILES = sources.FileSpec(
    "samsum", {"train": ("train.json",), "validation": ("val.json",)},
    sources.per_file(readers.read_json_array), _dialogue_row, filter_rule="empty dialogue")
_SAMSUM_TFDS = sources.TfdsSpec("samsum", {"train": "train", "validation": "validation"},
                                _tfds_dialogue)

BUILTIN_DATASETS = (
    # Dialogue summarization: SAMSum trains, DialogSum is held out.
    BuiltinDataset("samsum", "dialogue_summarization", _DIALOGUE, _SAMSUM_FILES, _SAMSUM_TFDS,
                   held_out=False),
    BuiltinDataset("samsum_inv", "dialogue_inversion", _DIALOGUE, _SAMSUM_FILES, _SAMSUM_TFDS,
                   held_out=False),
    BuiltinDataset(
        "dialogsum", "dialogue_summarization", _DIALOGUE,
        sources.FileSpec("dialogsum", {"train": ("dialogsum.train.jsonl",),
                                       "validation": ("dialogsum.dev.jsonl",)},
                         _JSONL, _dialogue_row, filter_rule="empty dialogue"),
        None, held_out=True),
    # News summarization: CNN/DailyMail trains, XSum is held out.
    BuiltinDataset(
        "cnn_dailymail", "news_summarization", _NEWS,
        sources.FileSpec("cnn_dailymail", {"train": ("train.jsonl",),
                                           "validation": ("validation.jsonl",)},
                         _JSONL, _news_row("article", "highlights")),
        sources.TfdsSpec("cnn_dailymail", {"train": "train", "validation": "validation"},
                         _tfds_news("article", "highlights")),
        held_out=False),
    BuiltinDataset(
        "xsum", "news_summarization", _NEWS,
        sources.FileSpec("xsum", {"train": ("train.jsonl",), "validation": ("validation.jsonl",)},
                         _JSONL, _news_row("document", "summary")),
        sources.TfdsSpec("xsum", {"train": "train", "validation": "validation"},
                         _tfds_news("document", "summary")),
        held_out=True),
    # Review rating: clothing reviews train, Amazon apparel reviews are held out.
    BuiltinDataset(
        "clothing_reviews", "review_rating", _REVIEW,
        sources.FileSpec("review_rating", {"train": ("train.csv",), "validation": ("valid.csv",)},
                         sources.per_file(readers.read_delimited), _clothing_row,
                         filter_rule="empty 'Review Text'"),
        None, held_out=False),
    BuiltinDataset(
        "amazon_reviews", "review_rating", _REVIEW,
        sources.FileSpec("amazon_reviews", {"train": ("train.jsonl",),
                                            "validation": ("validation.jsonl",)},
                         _JSONL, _review_jsonl_row),
        # amazon_us_reviews has only a train split; its first 5,000 reviews serve as validation.
        sources.TfdsSpec("amazon_us_reviews/Apparel_v1_00",
                         {"train": "train[5000:]", "validation": "train[:5000]"}, _tfds_amazon),
        held_out=True),
    # NER: CoNLL-2003 trains, WikiANN (English) is held out.
    BuiltinDataset(
        "conll2003", "named_entity_recognition", _NER,
        sources.FileSpec("conll2003", {"train": ("train.txt",), "validation": ("valid.txt",)},
                         _CONLL, _ner_row),
        sources.TfdsSpec("conll2003", {"train": "train", "validation": "dev"}, _tfds_ner("ner")),
        held_out=False),
    BuiltinDataset(
        "wikiann", "named_entity_recognition", _NER,
        sources.FileSpec("wikiann", {"train": ("train.txt",), "validation": ("validation.txt",)},
                         _CONLL, _ner_row),
        sources.TfdsSpec("wikiann/en", {"train": "train", "validation": "validation"},
                         _tfds_ner("tags")),
        held_out=True),
    # Code: Java->C# trains; the reverse direction is held out (same functions, other direction).
    BuiltinDataset(
        "code_java2cs", "code_translation", _CODE, _code_files("java", "cs", "java", "cs"), None,
        held_out=False, constant_fields=(("source_lang", "Java"), ("target_lang", "C#")),
        postprocess=code_escape.unescape_postprocessor),
    BuiltinDataset(
        "code_cs2java", "code_translation", _CODE, _code_files("cs", "java", "cs", "java"), None,
        held_out=True, constant_fields=(("source_lang", "C#"), ("target_lang", "Java")),
        postprocess=code_escape.unescape_postprocessor),
)

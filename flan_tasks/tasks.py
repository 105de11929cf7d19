"""Registers the built-in FLAN tasks (T5 vocabulary) and the demo tasks (byte vocabulary).

Naming: `<dataset>_zs` (zero-shot, one template per example) and `<dataset>_fs` (few-shot, up to 3
exemplars from the same split). Registering reads no data: sources load when a dataset is built.
"""
from flan_tasks import datasets, demo_data, registry, sources, vocab

DEMO_DATASETS = (
    ("demo_dialogue", "dialogue_summarization", False, ()),
    ("demo_review", "review_rating", False, ()),
    ("demo_code", "code_translation", False, (("source_lang", "Scheme"), ("target_lang", "Python"))),
    ("demo_ner", "named_entity_recognition", False, ()),
    ("demo_support", "dialogue_summarization", True, ()),
    ("demo_restaurant", "review_rating", True, ()),
)


def register_builtin_tasks() -> None:
  for dataset in datasets.BUILTIN_DATASETS:
    registry.register_instruction_tasks(
        dataset.name, dataset.source(), dataset.family, vocabulary=vocab.t5_vocabulary(),
        group="flan", held_out=dataset.held_out, constant_fields=dict(dataset.constant_fields),
        postprocess=dataset.postprocess)


def _demo_fields(family: str):
  defaults = registry.FAMILY_DEFAULTS[family]
  return (defaults.input_field, defaults.target_field)


def register_demo_tasks() -> None:
  for name, family, held_out, constants in DEMO_DATASETS:
    source = sources.GeneratedDataSource(
        name, _demo_fields(family), lambda split, name=name: demo_data.generate(name, split),
        splits=tuple(demo_data.SPLIT_SIZES))
    registry.register_instruction_tasks(
        name, source, family, vocabulary=vocab.demo_vocabulary(), group="demo", held_out=held_out,
        constant_fields=dict(constants))

"""Instruction templates, one module per task family.

A family bundles zero-shot (input, target) templates with few-shot patterns. Templates name the fields
they use in braces (`{dialogue}`); each is checked against a task's fields when the task is registered.
"""
import dataclasses
import string
from typing import Dict, List, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class FewShotPattern:
  """How exemplars and the query are laid out in a few-shot prompt (as in the FLAN collection)."""
  inputs_prefix: str
  targets_prefix: str
  x_y_delimiter: str
  example_separator: str
  final_suffix: str = ""


@dataclasses.dataclass(frozen=True)
class TemplateFamily:
  name: str
  templates: Tuple[Tuple[str, str], ...]
  few_shot_patterns: Tuple[FewShotPattern, ...]
  description: str = ""

  def __post_init__(self):
    if not self.templates:
      raise ValueError(f"template family {self.name!r} has no templates")


# Patterns shared by every family unless it brings its own.
DEFAULT_FEW_SHOT_PATTERNS = (
    FewShotPattern("", "", "\n", "\n\n\n"),
    FewShotPattern("Q: ", "A: ", "\n", "\n\n"),
    FewShotPattern("Input: ", "Output: ", "\n", "\n\n"),
    FewShotPattern("Problem: ", "Answer: ", "\n\n", "\n\n\n"),
)


def placeholders(template: str) -> List[str]:
  """Field names a template refers to, in order of appearance."""
  return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def split_template(template: str) -> List[Tuple[str, str]]:
  """`"a {x} b"` -> `[("a ", "x"), (" b", "")]`: literal text followed by a field name (or "")."""
  parts = []
  for literal, field, spec, conversion in string.Formatter().parse(template):
    if spec or conversion:
      raise ValueError(f"template {template!r}: format specs and conversions are not supported")
    if field == "":
      raise ValueError(f"template {template!r}: empty placeholder '{{}}' is not allowed")
    parts.append((literal, field or ""))
  return parts


_FAMILIES: Dict[str, TemplateFamily] = {}


def register_family(family: TemplateFamily) -> TemplateFamily:
  if family.name in _FAMILIES:
    raise ValueError(f"template family {family.name!r} is already registered")
  for i, (inp, tgt) in enumerate(family.templates):
    split_template(inp)
    split_template(tgt)
  _FAMILIES[family.name] = family
  return family


def get_family(name: str) -> TemplateFamily:
  _load_builtin_families()
  if name not in _FAMILIES:
    raise ValueError(f"unknown template family {name!r}; known: {sorted(_FAMILIES)}")
  return _FAMILIES[name]


def family_names() -> Sequence[str]:
  _load_builtin_families()
  return sorted(_FAMILIES)


def _load_builtin_families():
  # Imported for their registration side effect; a module each keeps templates readable by family.
  from flan_tasks.templates import code, dialogue, ner, news, reviews  # pylint: disable=g-import-not-at-top,unused-import

"""T5X's `RestoreCheckpointConfig.assignment_map` and `fallback_to_scratch`: warm-start a model from a
checkpoint whose parameters are named differently, or from part of one.

Names are T5X's state-dict keys: `target/<module path>` for a parameter, `state/step`, and
`state/param_states/<module path>/<m|v|v_col|v_row>` for Adafactor's state. Each rule is
`(pattern, replacement)`: a model key that `re.fullmatch`es the first matching pattern is read from
the checkpoint key `match.expand(replacement)`, or, with a `None` replacement, is not read (it keeps
its fresh initialization, which needs `fallback_to_scratch = True`). A key no rule matches is read
under its own name, and so is a matched key whose own name the checkpoint holds and no rule reads
(T5X's rule 2: unread checkpoint keys are kept). Every pattern must match some model key, as T5X requires. flan_t5x reads
parameters and the step from an INITIAL_CHECKPOINT_PATH, never its optimizer state, so rules on
`state/param_states/...` only count as used.
"""
import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

ADAFACTOR_SLOTS = ('m', 'v', 'v_col', 'v_row')
STEP_KEY = 'state/step'


class AssignmentMapError(ValueError):
  """The map does not fit the model or the checkpoint; raised before any parameter is placed."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """Where each model parameter comes from."""
  sources: dict[str, Optional[str]]  # model parameter name -> checkpoint parameter name (None: initialized)
  step_from_checkpoint: bool  # False when a rule maps `state/step` to None
  unused_checkpoint_names: tuple[str, ...]  # checkpoint parameters no model parameter reads

  def summary(self) -> str:
    renamed = sum(1 for name, source in self.sources.items() if source not in (None, name))
    initialized = sum(1 for source in self.sources.values() if source is None)
    return (f'assignment_map: {len(self.sources) - initialized} parameters read ({renamed} under other names), '
            f'{initialized} initialized from scratch, {len(self.unused_checkpoint_names)} checkpoint parameters '
            'not used' + ('' if self.step_from_checkpoint else '; the step starts at 0'))


def _model_keys(param_names: Sequence[str]) -> list[str]:
  return ([f'target/{n}' for n in param_names] + [STEP_KEY]
          + [f'state/param_states/{n}/{slot}' for n in param_names for slot in ADAFACTOR_SLOTS])


def check_rules(assignment_map: Any) -> list[tuple[str, Optional[str]]]:
  """The map as (compiled-checked pattern, replacement) pairs; a malformed one is one clear error."""
  field = 'utils.RestoreCheckpointConfig.assignment_map'
  if isinstance(assignment_map, (str, bytes)) or not isinstance(assignment_map, Sequence):
    raise AssignmentMapError(f'{field} must be a sequence of (pattern, replacement) pairs, got '
                             f'{assignment_map!r}.')
  rules = []
  for index, rule in enumerate(assignment_map):
    if (isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2
        or not isinstance(rule[0], str) or not (rule[1] is None or isinstance(rule[1], str))):
      raise AssignmentMapError(f'{field}[{index}] = {rule!r}: expected (pattern, replacement or None).')
    try:
      re.compile(rule[0])
    except re.error as err:
      raise AssignmentMapError(f'{field}[{index}]: {rule[0]!r} is not a regular expression ({err}).') from None
    rules.append((rule[0], rule[1]))
  return rules


def plan(model_names: Sequence[str], checkpoint_names: Sequence[str], assignment_map: Any,
         fallback_to_scratch: bool) -> Plan:
  """T5X's `state_utils.apply_assignment_map` rules, applied to names only."""
  rules = check_rules(assignment_map or ())
  available = set(checkpoint_names)
  used_patterns, sources, step_from_checkpoint = set(), {}, True
  for key in _model_keys(model_names):
    source = key
    for pattern, replacement in rules:
      found = re.fullmatch(pattern, key)
      if found:
        used_patterns.add(pattern)
        source = None if replacement is None else found.expand(replacement)
        break
    if key == STEP_KEY:
      step_from_checkpoint = source is not None
    if not key.startswith('target/'):
      continue  # optimizer state: never read from an INITIAL_CHECKPOINT_PATH
    name = key[len('target/'):]
    if source is None:
      sources[name] = None
    elif source.startswith('target/') and source[len('target/'):] in available:
      sources[name] = source[len('target/'):]
    elif source != key:
      raise AssignmentMapError(f"assignment_map maps '{key}' to '{source}', which the checkpoint does not hold "
                               f'(it holds {len(available)} parameters, e.g. target/{sorted(available)[0]}).')
    elif fallback_to_scratch:
      sources[name] = None
    else:
      raise AssignmentMapError(f"The checkpoint has no parameter '{key}' and no assignment_map rule names one: "
                               'add a rule for it, or set utils.RestoreCheckpointConfig.fallback_to_scratch = True '
                               'to initialize it from scratch.')
  # T5X re-adds every checkpoint key no rule read under its own name, after the rules: where the model
  # has that name too, the checkpoint's same-named value wins over the rule's.
  consumed = {source for source in sources.values() if source is not None}
  for name, source in sources.items():
    if source not in (None, name) and name in available and name not in consumed:
      sources[name] = name
  unused = [p for p, _ in rules if p not in used_patterns]
  if unused:
    raise AssignmentMapError(f'Unused patterns in `assignment_map`: {unused} (each must fullmatch a model key: '
                             "'target/<module path>', 'state/step' or 'state/param_states/...').")
  skipped = sorted(n for n, s in sources.items() if s is None)
  if skipped and not fallback_to_scratch:
    raise AssignmentMapError(f'assignment_map leaves {len(skipped)} parameters unread (e.g. target/{skipped[0]}): '
                             'set utils.RestoreCheckpointConfig.fallback_to_scratch = True to initialize them '
                             'from scratch, as T5X requires.')
  read = {s for s in sources.values() if s is not None}
  return Plan(sources, step_from_checkpoint, tuple(sorted(available - read)))


def assemble(the_plan: Plan, checkpoint_params: Mapping[str, np.ndarray], initial_params: Mapping[str, Any],
             model_shapes: Mapping[str, tuple]) -> dict[str, Any]:
  """The model's flat parameters: read where the plan says, else from `initial_params`; shapes checked."""
  flat, wrong = {}, []
  for name, source in the_plan.sources.items():
    value = initial_params[name] if source is None else checkpoint_params[source]
    if tuple(np.shape(value)) != tuple(model_shapes[name]):
      wrong.append(f'target/{name} <- target/{source}: {tuple(np.shape(value))} (model expects '
                   f'{tuple(model_shapes[name])})')
    flat[name] = value
  if wrong:
    raise AssignmentMapError(f'assignment_map reads {len(wrong)} parameters of another shape: ' + '; '.join(wrong[:5]))
  return flat

"""Mixtures: examples-proportional rates with a per-dataset cap and a temperature, as in FLAN.

The cap applies to a dataset, not a task: a dataset's zero-shot and few-shot tasks in one mixture
share its rate, so adding the few-shot variant does not double a dataset's weight.
"""
import collections
import functools
import logging
from typing import Dict, List, Sequence

import seqio
import tensorflow as tf

from flan_tasks import config, registry, sources

logger = logging.getLogger(__name__)

FLAN_MAXIMUM_EXAMPLES = 30_000  # the FLAN collection's per-dataset cap


def _dataset_rate(task: seqio.Task, maximum: int, temperature: float, share: int) -> float:
  if task_available(task, "train") or not task_cached(task, "train"):
    count = task.num_input_examples("train")
  else:  # only SeqIO's cache of the task is on this machine
    count = task.get_cached_stats("train")["examples"]
  if count is None:
    raise ValueError(f"task {task.name!r}: its source does not know its number of train examples; "
                     "give the mixture explicit rates")
  return (min(count, maximum) ** (1.0 / temperature)) / share


def examples_proportional_rates(task_names: Sequence[str], maximum: int = FLAN_MAXIMUM_EXAMPLES,
                                temperature: float = 1.0) -> List[tuple]:
  """[(task, rate_fn)] with rate = min(#train examples, maximum) ** (1/temperature), shared per dataset.

  Rates are computed when the mixture is first used, so registering reads no data.
  """
  if maximum <= 0 or temperature <= 0:
    raise ValueError(f"maximum and temperature must be positive, got {maximum}, {temperature}")
  per_dataset = collections.Counter(_dataset_of(name) for name in task_names)
  return [(name, functools.partial(_dataset_rate, maximum=maximum, temperature=temperature,
                                   share=per_dataset[_dataset_of(name)]))
          for name in task_names]


def _dataset_of(task_name: str) -> str:
  try:
    return registry.task_info(task_name).dataset
  except ValueError:
    return task_name  # a plain SeqIO task is its own dataset


def task_available(task: seqio.Task, split: str) -> bool:
  """Whether the task's data can be read for `split` (local files or a prepared TFDS copy)."""
  source = task.source
  return source.available(split) if isinstance(source, sources.InstructionDataSource) else True


def task_cached(task: seqio.Task, split: str) -> bool:
  """Whether SeqIO's cache (in a directory given to seqio.add_global_cache_dirs) holds `split`."""
  if not task.supports_caching or not seqio.utils.get_global_cache_dirs():
    return False
  cache_dir = task.cache_dir
  return bool(cache_dir) and tf.io.gfile.exists(seqio.get_cached_info_path(cache_dir, split))


# The splits a member's data must have for the member to be in a mixture (those it declares).
DEFAULT_REQUIRED_SPLITS = ("train", "validation")


class AvailableDataMixture(seqio.Mixture):
  """A mixture whose members are the listed tasks whose data (or SeqIO cache) is on this machine.

  The FLAN mixtures span datasets few users hold all of (TFDS-only ones among them). Which members
  have their data (every split of `required_splits` that the task declares) is decided when the
  mixture is first used, not at registration, and logged once; `tasks` (so `seqio.get_subtasks`,
  T5X's training evaluation, `seqio.Evaluator`, `t5x.eval` and flan_t5x) and `get_dataset` all see
  that one member set. The decision is redone only if flan_tasks' data settings or SeqIO's cache
  directories change. With
  `flan_tasks.configure(missing_data="error")` (or $FLAN_MISSING_DATA=error) a missing member is a
  DataNotFoundError instead. A task whose data is missing but whose split is in SeqIO's cache (a
  directory added with `seqio.add_global_cache_dirs`, e.g. by `--seqio_additional_cache_dirs`) stays
  a member, so a host with only the cache trains with `use_cached=True`.
  """

  def __init__(self, name, tasks, *args, required_splits: Sequence[str] = DEFAULT_REQUIRED_SPLITS,
               **kwargs):
    self._required_splits = tuple(required_splits)
    self._members = None  # (settings the decision was made under, kept tasks)
    self._registered = False
    super().__init__(name, tasks, *args, **kwargs)  # checks features of all listed tasks
    self._registered = True

  @property
  def listed_tasks(self) -> List[seqio.Task]:
    """Every task the mixture was registered with, available or not."""
    return seqio.Mixture.tasks.fget(self)

  @property
  def tasks(self) -> List[seqio.Task]:
    if not self._registered:  # seqio's constructor: no data is looked at when registering
      return self.listed_tasks
    settings = (config.data_dir(), config.tfds_data_dir(), config.missing_data_policy(),
                tuple(seqio.utils.get_global_cache_dirs()))
    if self._members is None or self._members[0] != settings:
      self._members = (settings, self._decide_members())
    return list(self._members[1])

  @property
  def total_rate(self) -> float:
    """The members' summed rate. A listed task whose data is missing has no rate (its source cannot
    count its examples), so seqio's sum over every listed task would fail when this mixture is a
    sub-mixture (a replay mixture's earlier mixture)."""
    return sum(self.get_rate(task) for task in self.tasks)

  def _missing_split(self, task: seqio.Task):
    for split in self._required_splits:
      if split in task.splits and not (task_available(task, split) or task_cached(task, split)):
        return split
    return None

  def unavailable_tasks(self, split: str = "train") -> List[str]:
    """Listed tasks without `split` data (whether or not the split is required)."""
    return [t.name for t in self.listed_tasks if split in t.splits and not task_available(t, split)]

  def _decide_members(self) -> List[seqio.Task]:
    listed = self.listed_tasks
    missing = {t.name: split for t in listed if (split := self._missing_split(t)) is not None}
    if not missing:
      return listed
    kept = [t for t in listed if t.name not in missing]
    how = "\n".join(dict.fromkeys(  # one message per dataset, not per zs/fs task
        str(sources.missing_data_error(seqio.get_mixture_or_task(n).source, split))
        for n, split in missing.items()))
    if config.missing_data_policy() == "error" or not kept:
      raise sources.DataNotFoundError(
          f"mixture {self.name!r}: no data for {sorted(missing)}.\n{how}")
    logger.warning("mixture %r: leaving out %d of its %d task(s), whose data is not available: %s. "
                   "Its members are: %s. To include the others:\n%s", self.name, len(missing),
                   len(listed), sorted(missing), [t.name for t in kept], how)
    return kept


def add_mixture(name: str, tasks: Sequence[str], maximum: int = FLAN_MAXIMUM_EXAMPLES,
                temperature: float = 1.0,
                required_splits: Sequence[str] = DEFAULT_REQUIRED_SPLITS) -> str:
  """Registers (or replaces) a mixture of tasks, e.g. the user's own tasks with flan tasks.

  Its members are the tasks whose data is available for each of `required_splits` they declare
  (see AvailableDataMixture).
  """
  if not tasks:
    raise ValueError(f"mixture {name!r}: no tasks given")
  unknown = [t for t in tasks if t not in seqio.TaskRegistry.names()]
  if unknown:
    raise ValueError(f"mixture {name!r}: unknown task(s) {unknown}")
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, examples_proportional_rates(tasks, maximum, temperature),
                            mixture_cls=AvailableDataMixture, required_splits=tuple(required_splits))
  return name


def add_replay_mixture(name: str, target: str, previous: str, replay_fraction: float) -> str:
  """Registers `target` mixed with `replay_fraction` of an earlier mixture or task (rehearsal).

  E.g. DialogSum plus 1% of flan_mix (Scialom et al. 2022 kept nearly all earlier skills so);
  the replayed part keeps the earlier mixture's own task rates.
  """
  if not 0.0 < replay_fraction < 1.0:
    raise ValueError(f"mixture {name!r}: replay_fraction must be in (0, 1), got {replay_fraction}")
  for member in (target, previous):
    if member not in seqio.TaskRegistry.names() and member not in seqio.MixtureRegistry.names():
      raise ValueError(f"mixture {name!r}: unknown task or mixture {member!r}")
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, [(target, 1.0 - replay_fraction), (previous, replay_fraction)])
  return name


def select_tasks(group: str, held_out: bool) -> List[str]:
  return sorted(info.name for info in registry.all_task_info()
                if info.group == group and info.held_out == held_out)


def register_builtin_mixtures() -> None:
  flan_mix, flan_heldout = select_tasks("flan", False), select_tasks("flan", True)
  overlap = set(flan_mix) & set(flan_heldout)
  if overlap:  # a dataset may never be both trained on and held out
    raise ValueError(f"tasks both in flan_mix and flan_heldout: {sorted(overlap)}")
  add_mixture("flan_mix", flan_mix)
  add_mixture("flan_heldout", flan_heldout, required_splits=("validation",))  # evaluated only
  add_mixture("demo_mix", select_tasks("demo", False))
  add_mixture("demo_heldout", select_tasks("demo", True), required_splits=("validation",))


def mixture_rates(name: str, split: str = "train") -> Dict[str, float]:
  """{task: rate} of a registered mixture's members with `split` data (reads their example counts)."""
  mixture = seqio.get_mixture_or_task(name)
  if not isinstance(mixture, seqio.Mixture):
    raise ValueError(f"{name!r} is a task, not a mixture")
  return {task.name: mixture.get_rate(task) for task in mixture.tasks
          if task_available(task, split) or task_cached(task, split)}

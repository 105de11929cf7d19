"""Mixtures: examples-proportional rates with a per-dataset cap and a temperature, as in FLAN.

The cap applies to a dataset, not a task: a dataset's zero-shot and few-shot tasks in one mixture
share its rate, so adding the few-shot variant does not double a dataset's weight.
"""
import collections
import functools
import logging
from typing import Dict, List, Sequence

import seqio

from flan_tasks import config, registry, sources

logger = logging.getLogger(__name__)

FLAN_MAXIMUM_EXAMPLES = 30_000  # the FLAN collection's per-dataset cap


def _dataset_rate(task: seqio.Task, maximum: int, temperature: float, share: int) -> float:
  count = task.num_input_examples("train")
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


class AvailableDataMixture(seqio.Mixture):
  """A mixture that leaves out tasks whose data is not on this machine, saying so in the log.

  The FLAN mixtures span datasets few users hold all of (TFDS-only ones among them). With
  `flan_tasks.configure(missing_data="error")` a missing dataset is an error instead.
  """

  def unavailable_tasks(self, split: str = "train") -> List[str]:
    return [t.name for t in self.tasks if split in t.splits and not task_available(t, split)]

  def get_dataset(self, sequence_length=None, split="train", *args, **kwargs):
    missing = self.unavailable_tasks(split)
    if not missing:
      return super().get_dataset(sequence_length, split, *args, **kwargs)
    kept = [(t.name, self._task_to_rate[t.name]) for t in self.tasks if t.name not in missing]
    how = "\n".join(dict.fromkeys(  # one message per dataset, not per zs/fs task
        str(sources.missing_data_error(seqio.get_mixture_or_task(n).source, split)) for n in missing))
    if config.missing_data_policy() == "error" or not kept:
      raise sources.DataNotFoundError(
          f"mixture {self.name!r}: no data for {missing} ({split}).\n{how}")
    logger.warning("mixture %r: leaving out %d task(s) whose data is not available: %s. To include "
                   "them:\n%s", self.name, len(missing), missing, how)
    return seqio.Mixture(self.name, kept).get_dataset(sequence_length, split, *args, **kwargs)


def add_mixture(name: str, tasks: Sequence[str], maximum: int = FLAN_MAXIMUM_EXAMPLES,
                temperature: float = 1.0) -> str:
  """Registers (or replaces) a mixture of tasks, e.g. the user's own tasks with flan tasks."""
  if not tasks:
    raise ValueError(f"mixture {name!r}: no tasks given")
  unknown = [t for t in tasks if t not in seqio.TaskRegistry.names()]
  if unknown:
    raise ValueError(f"mixture {name!r}: unknown task(s) {unknown}")
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, examples_proportional_rates(tasks, maximum, temperature),
                            mixture_cls=AvailableDataMixture)
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
  add_mixture("flan_heldout", flan_heldout)
  add_mixture("demo_mix", select_tasks("demo", False))
  add_mixture("demo_heldout", select_tasks("demo", True))


def mixture_rates(name: str, split: str = "train") -> Dict[str, float]:
  """{task: rate} of a registered mixture's available tasks (reads each task's example count)."""
  mixture = seqio.get_mixture_or_task(name)
  if not isinstance(mixture, seqio.Mixture):
    raise ValueError(f"{name!r} is a task, not a mixture")
  return {task.name: mixture.get_rate(task) for task in mixture.tasks
          if task_available(task, split)}

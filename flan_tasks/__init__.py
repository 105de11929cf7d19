"""flan_tasks: FLAN-style instruction-formatted SeqIO tasks, templates and mixtures.

`import flan_tasks` registers every built-in task and mixture with SeqIO (no data is read until a
dataset is built). See README.md for the naming scheme and how to add your own data.
"""
import os as _os
import sys as _sys


def _import_tensorflow_quietly() -> None:
  """TensorFlow's first import writes C++ lines to file descriptor 2 (absl's InitializeLog note,
  `cudart_stub ... Could not find cuda drivers` on a CPU machine) before any log setting can act; a
  notebook shows them as red blocks. flan_tasks imports it (through seqio) with fd 2 at /dev/null;
  its real failures arrive as Python exceptions. FLAN_SHOW_STARTUP_LOGS=1 keeps the lines.
  (flan_t5x's jobs do the same through flan_t5x/quiet.py; flan_tasks imports nothing of flan_t5x.)"""
  if "tensorflow" in _sys.modules or _os.environ.get("FLAN_SHOW_STARTUP_LOGS") == "1":
    return
  # Without a GPU driver, TF's `failed call to cuInit` at its first op is an error line that says
  # nothing (flan_t5x/__init__.py: the same rule for its jobs); a value the user set is kept.
  has_gpu_driver = any(_os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
  _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if has_gpu_driver else "3")
  _sys.stderr.flush()
  saved, devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
  try:
    _os.dup2(devnull, 2)
    __import__("tensorflow")
  finally:
    _os.dup2(saved, 2)
    _os.close(saved)
    _os.close(devnull)


_import_tensorflow_quietly()
from flan_tasks.config import absolute_path, configure  # pylint: disable=g-import-not-at-top
from flan_tasks.flan_collection import (HeldOutLeakError, add_flan_collection, add_weighted_mixture,
                                        check_no_leak)
from flan_tasks.formatting import METADATA_FEATURES
from flan_tasks.mixtures import add_mixture, add_replay_mixture, examples_proportional_rates, mixture_rates
from flan_tasks.registry import add_instruction_task, all_task_info, task_info
from flan_tasks.sources import DataNotFoundError
from flan_tasks.vocab import demo_vocabulary, t5_vocabulary
from flan_tasks import mixtures as _mixtures
from flan_tasks import tasks as _tasks

_tasks.register_builtin_tasks()
_tasks.register_demo_tasks()
_mixtures.register_builtin_mixtures()

try:  # gin is a dependency, but keep the package usable where a caller has removed it
  import gin as _gin
except ImportError:  # pragma: no cover
  _gin = None


def _register_gin_configurables():
  global configure, add_instruction_task, add_mixture, add_replay_mixture
  global add_flan_collection, add_weighted_mixture
  configure = _gin.external_configurable(configure, "flan_tasks.configure")
  add_instruction_task = _gin.external_configurable(add_instruction_task,
                                                    "flan_tasks.add_instruction_task")
  add_mixture = _gin.external_configurable(add_mixture, "flan_tasks.add_mixture")
  add_replay_mixture = _gin.external_configurable(add_replay_mixture, "flan_tasks.add_replay_mixture")
  add_flan_collection = _gin.external_configurable(add_flan_collection,
                                                   "flan_tasks.add_flan_collection")
  add_weighted_mixture = _gin.external_configurable(add_weighted_mixture,
                                                    "flan_tasks.add_weighted_mixture")
  _gin.external_configurable(demo_vocabulary, "flan_tasks.demo_vocabulary")
  _gin.external_configurable(t5_vocabulary, "flan_tasks.t5_vocabulary")
  _gin.external_configurable(absolute_path, "flan_tasks.absolute_path")


if _gin is not None:
  if _gin.config_is_locked():
    # Imported after gin parsing was finalized, as T5X's MIXTURE_OR_TASK_MODULE does: adding a
    # configurable then is harmless (no binding can refer to it any more) but gin refuses it while
    # locked, so register with the lock lifted; later parses (after gin.clear_config) can use them.
    with _gin.unlock_config():
      _register_gin_configurables()
  else:
    _register_gin_configurables()

__all__ = ["configure", "add_instruction_task", "add_mixture", "add_replay_mixture", "examples_proportional_rates",
           "mixture_rates", "task_info", "all_task_info", "DataNotFoundError", "METADATA_FEATURES", "demo_vocabulary",
           "t5_vocabulary", "absolute_path", "add_flan_collection", "add_weighted_mixture", "check_no_leak",
           "HeldOutLeakError"]

"""One writer per MODEL_DIR: a second trainer is refused with the holder named; a SIGKILLed holder
leaves no stuck lock."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from flan_t5x import run_lock

import faults

_HOLD = ('import sys, time\n'
         'from flan_t5x import run_lock\n'
         'run_lock.RunLock(sys.argv[1]).acquire()\n'
         'print("locked", flush=True)\n'
         'time.sleep(600)\n')


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_holder_frees_the_dir(tmp_path):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(model_dir)], stdout=subprocess.PIPE, text=True,
                            env=faults.child_env())
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(run_lock.RunLockedError, match=rf'MODEL_DIR {model_dir}: pid {holder.pid} on host '):
      faults.train(model_dir, 1)
    assert faults.steps_in(model_dir) == []  # refused before any work
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  step, _ = faults.train(model_dir, 1)
  assert step == 1 and faults.steps_in(model_dir) == [1]


def test_lock_is_released_when_training_fails(tmp_path):
  """A run that stops with an error (here: another model size) frees MODEL_DIR for the next one."""
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  with run_lock.RunLock(str(model_dir)):
    pass
  with run_lock.RunLock(str(model_dir)) as lock:  # the same process, a second time
    assert lock.path.endswith('.lock-process_0-of-1')


def test_a_released_lock_leaves_no_file_and_a_waiter_on_the_old_file_takes_the_new_one(tmp_path):
  first = run_lock.RunLock(str(tmp_path)).acquire()
  waiter_fd = os.open(first.path, os.O_RDWR)  # opened the file before it went
  first.release()
  assert list(tmp_path.iterdir()) == []  # nothing left in someone else's directory
  # The waiter locks the removed file's inode; acquire() notices and locks the current path instead.
  fcntl.flock(waiter_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  second = run_lock.RunLock(str(tmp_path)).acquire()
  assert (tmp_path / '.lock-process_0-of-1').exists()
  with pytest.raises(run_lock.RunLockedError):
    run_lock.RunLock(str(tmp_path)).acquire()
  second.release()
  os.close(waiter_fd)

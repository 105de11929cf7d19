"""Parent side of the torch peer: runs `python -m flan_t5x.hf_peer` in a child process.

torch / transformers never load into a process holding JAX and TensorFlow (torch's triton segfaults
there); arrays travel through .npz files, everything else as JSON. Imports no torch and no JAX.

  response, arrays = hf_peer_client.call('forward', {'model_dir': d, 'greedy_tokens': 6},
                                         {'encoder_input_tokens': tokens_BxL})
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from flan_t5x import hf_peer

STDERR_TAIL_CHARS = 4000
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HFPeerError(RuntimeError):
  """The torch child failed, crashed, timed out or imported JAX/TensorFlow."""


class HFPeerUnavailable(HFPeerError):
  """torch or transformers is not installed in this interpreter (`pip install -e '.[bench]'`)."""


def _child_env() -> dict:
  env = dict(os.environ)
  # The child must import this same flan_t5x (a checkout run without installing, a worktree).
  env['PYTHONPATH'] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get('PYTHONPATH')) if p)
  return env


def _describe_exit(returncode: int) -> str:
  if returncode >= 0:
    return f'exited with status {returncode}'
  try:
    name = signal.Signals(-returncode).name
  except ValueError:
    name = f'signal {-returncode}'
  if -returncode == signal.SIGSEGV:
    return f'crashed with a segmentation fault ({name})'
  return f'was killed by {name}'


def call(command: str, request: dict | None = None, arrays: dict[str, np.ndarray] | None = None,
         timeout: float | None = 600) -> tuple[dict, dict[str, np.ndarray]]:
  """Runs one hf_peer command; returns (JSON response, output arrays).

  Raises HFPeerUnavailable without torch/transformers, HFPeerError (with the child's stderr tail)
  on any other failure, a crash by signal, a timeout, or a child that imported JAX/TensorFlow.
  """
  if command not in hf_peer.COMMANDS:
    raise ValueError(f'unknown hf_peer command {command!r}; expected one of {sorted(hf_peer.COMMANDS)}')
  with tempfile.TemporaryDirectory(prefix='flan_hf_peer_') as tmp:
    request = dict(request or {})
    request['response_path'] = os.path.join(tmp, 'response.json')
    request['outputs_npz'] = os.path.join(tmp, 'outputs.npz')
    if arrays:
      request['inputs_npz'] = os.path.join(tmp, 'inputs.npz')
      np.savez(request['inputs_npz'], **{k: np.asarray(v) for k, v in arrays.items()})
    request_path = os.path.join(tmp, 'request.json')
    with open(request_path, 'w') as f:
      json.dump(request, f)
    argv = [sys.executable, '-m', 'flan_t5x.hf_peer', command, request_path]
    try:
      result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_child_env(),
                              check=False)
    except subprocess.TimeoutExpired as e:
      stderr = e.stderr.decode(errors='replace') if isinstance(e.stderr, bytes) else (e.stderr or '')
      raise HFPeerError(f'hf_peer {command} did not finish within {timeout} s; stderr tail:\n'
                        f'{stderr[-STDERR_TAIL_CHARS:]}') from None
    tail = result.stderr[-STDERR_TAIL_CHARS:]
    if result.returncode == hf_peer.EXIT_UNAVAILABLE:
      raise HFPeerUnavailable(tail.strip() or f'hf_peer {command}: torch/transformers not installed')
    if result.returncode != 0:
      raise HFPeerError(f'hf_peer {command} {_describe_exit(result.returncode)} '
                        f'(ran: {" ".join(argv)}); stderr tail:\n{tail}')
    try:
      with open(request['response_path']) as f:
        response = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise HFPeerError(f'hf_peer {command} exited 0 but wrote no valid response ({e}); '
                        f'stderr tail:\n{tail}') from None
    if response.get('forbidden_modules'):
      roots = sorted({m.split('.')[0] for m in response['forbidden_modules']})
      raise HFPeerError(f'hf_peer {command}: the torch child imported {roots} '
                        f'({len(response["forbidden_modules"])} modules); it must never load '
                        "JAX/TensorFlow (torch's triton crashes next to them)")
    outputs = {}
    if os.path.isfile(request['outputs_npz']):
      with np.load(request['outputs_npz']) as data:
        outputs = {k: data[k] for k in data.files}
    return response, outputs

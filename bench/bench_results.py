"""Where benchmarks put their JSON: bench/results/<name>_<timestamp>.json, written atomically, with
the machine record (hardware.machine_record) under 'machine'."""
import json
import os
import time

import hardware  # bench/ is on sys.path when run as a script

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def write_json(name: str, payload: dict, path: str | None = None) -> str:
  """Writes `payload` and the machine record to `path` (default: a timestamped file under
  bench/results/); returns the path."""
  payload = {'machine': hardware.finish_record(hardware.machine_record()), **payload}
  path = path or os.path.join(RESULTS_DIR, f'{name}_{time.strftime("%Y%m%d_%H%M%S")}.json')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)
  return path

"""Cloud TPU slices as users book them (`v4-32`, `v5litepod-16`, ...) and their chips.

No JAX here: the table and the name parsing are plain Python, so an unknown slice name is
refused before anything is imported. `topology_devices` asks libtpu (the `[tpu]` extra) for a
slice's compile-only devices, one per chip as a TPU VM's JAX sees them (v4 and v5p chips as
one megacore device, as on Cloud TPU).
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip as JAX on a Cloud TPU VM sees it (one device)."""
  generation: str            # the accelerator-type prefix users type: 'v4', 'v5litepod', ...
  hbm_gib: float             # HBM per chip
  peak_bf16_tflops: float    # dense bf16 peak per chip
  hbm_gb_per_s: float        # HBM bandwidth per chip
  name_counts_cores: bool    # True: 'v4-8' counts TensorCores (2 per chip), False: chips
  jax_prefix: str            # libtpu's topology prefix ('v5' for v5p)
  chip_config: str           # libtpu's chip_config_name: 'megacore' = one device per chip
  source: str


# Google Cloud's system-architecture pages for each generation (read 2026-12); the topology
# prefixes and chip configurations are those MaxText's accelerator_to_spec_map.py passes to libtpu.
CHIPS = {
    'v4': Chip('v4', 32.0, 275.0, 1200.0, True, 'v4', 'megacore', 'https://cloud.google.com/tpu/docs/v4'),
    'v5litepod': Chip('v5litepod', 16.0, 197.0, 819.0, False, 'v5e', 'default',
                      'https://cloud.google.com/tpu/docs/v5e'),
    'v5p': Chip('v5p', 95.0, 459.0, 2765.0, True, 'v5', 'megacore', 'https://cloud.google.com/tpu/docs/v5p'),
    'v6e': Chip('v6e', 32.0, 918.0, 1640.0, False, 'v6e', 'default', 'https://cloud.google.com/tpu/docs/v6e'),
}
ALIASES = {'v5e': 'v5litepod'}  # what MaxText and many users call v5litepod

# Chips -> physical topology: 3-D tori for v4 / v5p, 2-D for v5e / v6e (Cloud TPU's shape tables).
_TOPOLOGY_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4', 128: '4x4x8',
                256: '4x8x8', 512: '8x8x8'}
_TOPOLOGY_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16', 256: '16x16'}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str       # as typed: 'v4-32'
  chip: Chip
  num_chips: int
  topology: str   # physical shape, e.g. '2x2x4'

  @property
  def jax_topology_name(self) -> str:
    return f'{self.chip.jax_prefix}:{self.topology}'

  @property
  def hbm_bytes_per_chip(self) -> int:
    return int(self.chip.hbm_gib * 2**30)

  def describe(self) -> str:
    return (f'{self.name}: {self.num_chips} {self.chip.generation} chips ({self.topology}), '
            f'{self.chip.hbm_gib:g} GiB HBM and {self.chip.peak_bf16_tflops:g} bf16 TFLOP/s each')


def known_slices() -> list[str]:
  names = []
  for generation, chip in CHIPS.items():
    table = _TOPOLOGY_3D if chip.jax_prefix in ('v4', 'v5') else _TOPOLOGY_2D
    names += [f'{generation}-{chips * (2 if chip.name_counts_cores else 1)}' for chips in table]
  return names


def parse_slice(name: str) -> Slice:
  """'v4-32' -> 16 v4 chips in a 2x2x4 torus. Unknown names: ValueError listing the known ones."""
  match = re.fullmatch(r'\s*(v\w+?)-(\d+)\s*', name)
  generation = ALIASES.get(match.group(1), match.group(1)) if match else None
  if match is None or generation not in CHIPS:
    raise ValueError(f'unknown TPU slice {name!r}: expected a Cloud TPU accelerator type, one of '
                     f'{", ".join(known_slices())}')
  chip = CHIPS[generation]
  count = int(match.group(2))
  num_chips = count // 2 if chip.name_counts_cores else count
  table = _TOPOLOGY_3D if chip.jax_prefix in ('v4', 'v5') else _TOPOLOGY_2D
  if (chip.name_counts_cores and count % 2) or num_chips not in table:
    raise ValueError(f'unknown TPU slice {name!r}: {generation} comes as '
                     f'{", ".join(n for n in known_slices() if n.startswith(generation + "-"))}')
  return Slice(f'{generation}-{count}', chip, num_chips, table[num_chips])


class LibtpuMissing(RuntimeError):
  pass


def require_libtpu() -> None:
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as err:
    raise LibtpuMissing("planning for a TPU needs libtpu, which is not installed: pip install -e '.[tpu]'") from err


def topology_devices(tpu_slice: Slice) -> list:
  """The slice's compile-only TPU devices (one per chip), from libtpu; no TPU needed."""
  require_libtpu()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  hosts = (2, 2, 1) if tpu_slice.num_chips >= 4 else (1, 1, 1)
  desc = topologies.get_topology_desc(
      topology_name=tpu_slice.jax_topology_name, platform='tpu', chip_config_name=tpu_slice.chip.chip_config,
      chips_per_host_bounds=hosts, num_slices=1)
  devices = list(desc.devices)
  if len(devices) != tpu_slice.num_chips:
    raise RuntimeError(f'libtpu describes {tpu_slice.jax_topology_name} ({tpu_slice.chip.chip_config}) with '
                       f'{len(devices)} devices; expected one per chip ({tpu_slice.num_chips}).')
  return devices

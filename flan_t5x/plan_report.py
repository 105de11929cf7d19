"""What `python -m flan_t5x.plan` prints and writes: a slice's plans as a table and as JSON."""

from __future__ import annotations

import dataclasses
import math

GIB = 2**30


def gib(num_bytes: float) -> str:
  return f'{num_bytes / GIB:.2f} GiB'


def _count(value: float) -> str:
  for unit, size in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(value) >= size:
      return f'{value / size:.3g}{unit}'
  return f'{value:.3g}'


def step_seconds(plan, tpu_slice) -> float | None:
  """Projected time of one call on the slice, a roofline: each part at the chip's bf16 peak or its
  HBM bandwidth, whichever takes longer (what XLA's own `optimal_seconds` applies; XLA:TPU leaves
  that negative or counts a loop's body once for these programs). A train step: XLA's FLOPs and
  bytes accessed per chip, the microbatch loop's body counted as often as it runs. A decode call:
  encoding (the model's FLOPs; XLA's bytes, which the encoder's attention dominates) plus
  max_decode_length decoder steps, each reading every parameter and the full key/value cache.
  A lower bound on time: no overlap losses and no collective time (listed beside it)."""
  if not plan.fits:
    return None
  chip, chips = tpu_slice.chip, math.prod(plan.mesh.values())
  flops_per_s, bytes_per_s = chip.peak_bf16_tflops * 1e12, chip.hbm_gb_per_s * 1e9
  if plan.job == 'train':
    trips = plan.settings.get('num_microbatches', 1)
    flops = max(plan.xla_flops * trips, plan.model_flops / chips)
    return max(flops / flops_per_s, plan.bytes_accessed * trips / bytes_per_s)
  settings = plan.settings
  encoder = max(settings['encoder_flops'] / chips / flops_per_s, plan.bytes_accessed / bytes_per_s)
  step = max(settings['decoder_step_flops'] / chips / flops_per_s,
             settings['decoder_step_bytes_per_device'] / bytes_per_s)
  return encoder + plan.lengths['targets'] * step


def projection(plan, tpu_slice) -> dict:
  """Throughput at the projected step time; MFU counts the model's FLOPs against the bf16 peak."""
  chips = math.prod(plan.mesh.values())
  seconds = step_seconds(plan, tpu_slice)
  if seconds is None:
    return {'step_seconds': None, 'examples_per_second': None, 'tokens_per_second_per_chip': None, 'mfu': None}
  return {'step_seconds': seconds,
          'examples_per_second': plan.batch_size / seconds,
          'tokens_per_second_per_chip': plan.tokens_per_step / seconds / chips,
          'mfu': plan.model_flops / (seconds * chips * tpu_slice.chip.peak_bf16_tflops * 1e12)}


def _setting_flags(plan) -> str:
  mesh = plan.mesh
  parts = [f"--gin.partitioning.PjitPartitioner.num_partitions={mesh.get('model', 1)}"]
  if plan.job == 'train':
    parts.append(f"--gin.trainer.Trainer.num_microbatches={plan.settings.get('num_microbatches', 1)}")
  return ' '.join(parts)


def suggestions(plan) -> list[str]:
  """When a plan does not fit: the changes that would, each with its estimated total (confirm with
  --sweep, which compiles them). Temporaries scale with the rows a device holds at once, state with
  the model-parallel width."""
  if plan.fits:
    return []
  hbm = plan.hbm_bytes_per_device
  state = sum(plan.state_bytes.values())
  other = max(plan.total_bytes - plan.temp_bytes - state, 0)
  lines = []
  if plan.temp_bytes and hbm > state + other:
    factor = 2 ** math.ceil(math.log2(max(plan.temp_bytes / (0.9 * hbm - state - other), 1.0001)))
    if plan.job == 'train':
      microbatches = plan.settings.get('num_microbatches', 1) * factor
      # At most one row per data shard in a microbatch: a batch of B rows on D shards allows B / D.
      most = plan.batch_size // math.prod(size for axis, size in plan.mesh.items() if axis != 'model')
      if microbatches <= most:
        lines.append(f'num_microbatches={microbatches} (--gin.trainer.Trainer.num_microbatches={microbatches}): '
                     f'temporaries about {gib(plan.temp_bytes / factor)}, total about '
                     f'{gib(state + other + plan.temp_bytes / factor)} per chip')
      else:
        lines.append(f'not more microbatches: {microbatches} would be needed, and {most} already gives each data '
                     'shard one row per microbatch')
      if plan.batch_size // factor >= 1:
        lines.append(f'or a batch {factor}x smaller (--gin.BATCH_SIZE={plan.batch_size // factor}): the same per chip')
      lines.append("or rematerialization (flan_t5x only: --gin.network.T5Config.remat_policy=\"'full'\"): keeps "
                   'one activation per layer and recomputes the rest (about a third more FLOPs)')
    else:
      lines.append(f'a batch {factor}x smaller (--gin.utils.DatasetConfig.batch_size='
                   f'{max(plan.batch_size // factor, 1)}): temporaries about {gib(plan.temp_bytes / factor)}')
  if state > 0.5 * hbm or hbm <= state + other or (plan.job == 'train' and lines and lines[0].startswith('not more')):
    width = plan.mesh.get('model', 1)
    factor = 2 ** math.ceil(math.log2(max(state / (0.5 * hbm), 2)))
    lines.append(f'num_partitions={width * factor} on a slice with {width * factor} chips or more '
                 f'(--gin.partitioning.PjitPartitioner.num_partitions={width * factor}): parameters and optimizer '
                 f'state about {gib(state / factor)} per chip, activations split {factor} ways more')
  lines.append('--sweep compiles these and names the fastest that fits')
  return lines


@dataclasses.dataclass
class SliceReport:
  tpu_slice: object
  job: str
  plans: list
  refused: str | None = None  # why the configuration cannot be laid out on this slice

  @property
  def best(self):
    """The fastest plan that fits (XLA's estimate); the configured one when none fits."""
    fitting = [plan for plan in self.plans if plan.fits]
    return min(fitting, key=lambda plan: step_seconds(plan, self.tpu_slice)) if fitting else None

  def _plan_lines(self, plan, title: str) -> list[str]:
    s, chip = self.tpu_slice, self.tpu_slice.chip
    lengths = f"{plan.lengths['inputs']}/{plan.lengths['targets']}"
    settings = ', '.join(f'{k}={v}' for k, v in plan.settings.items() if 'flops' not in k and 'bytes' not in k)
    lines = [f'  {title}: mesh {plan.mesh}, batch {plan.batch_size} x {lengths} tokens ({settings})']
    state = ' + '.join(f'{name} {gib(size)}' for name, size in plan.state_bytes.items())
    verdict = (f'FITS, {gib(plan.margin_bytes)} to spare' if plan.fits else
               f'DOES NOT FIT, {gib(-plan.margin_bytes)} over' if plan.total_bytes else 'DOES NOT FIT')
    if plan.error:
      lines.append(f'    XLA: {plan.error}')
    lines.append(f'    per chip: {state}; temporaries {gib(plan.temp_bytes)}; total {gib(plan.total_bytes)} '
                 f'of {chip.hbm_gib:g} GiB HBM: {verdict}')
    if plan.fits:
      p = projection(plan, s)
      unit = 'step' if plan.job == 'train' else 'batch'
      xla_time = f'{plan.xla_seconds:.3g} s' if plan.xla_seconds else 'none'
      lines.append(f'    FLOPs/{unit} {_count(plan.model_flops)} (model); XLA per chip {_count(plan.xla_flops)} FLOPs, '
                   f'{gib(plan.bytes_accessed)} accessed (a loop body once), optimal_seconds {xla_time}')
      lines.append(f'    projected (roofline at {chip.peak_bf16_tflops:g} TFLOP/s, {chip.hbm_gb_per_s:g} GB/s): '
                   f'{p["step_seconds"]:.3f} s/{unit} -> {p["examples_per_second"]:.1f} examples/s, '
                   f'{p["tokens_per_second_per_chip"]:,.0f} tokens/s/chip, MFU {100 * p["mfu"]:.1f}% (an upper bound)')
      collectives = ', '.join(f'{op} {c["count"]} ({gib(c["bytes"])})' for op, c in plan.collectives.items())
      lines.append(f'    collectives per step: {collectives or "none"}')
    for line in suggestions(plan):
      lines.append(f'    would fit: {line}')
    lines.append(f'    compiled in {plan.compile_seconds:.0f} s on this machine')
    return lines

  def text(self) -> str:
    lines = [f'{self.tpu_slice.describe()} -- {self.job}']
    if self.refused:
      return '\n'.join(lines + [f'  cannot be laid out on this slice: {self.refused}'])
    lines += self._plan_lines(self.plans[0], 'as configured')
    for plan in self.plans[1:]:
      lines += self._plan_lines(plan, 'sweep')
    best = self.best
    if len(self.plans) > 1:
      lines.append(f'  fastest that fits: {_setting_flags(best)}' if best is not None else
                   '  nothing swept fits this slice: a larger slice or a smaller batch')
    return '\n'.join(lines)

  def as_json(self) -> dict:
    best = self.best
    return {'slice': self.tpu_slice.name, 'jax_topology': self.tpu_slice.jax_topology_name,
            'chip': dataclasses.asdict(self.tpu_slice.chip), 'num_chips': self.tpu_slice.num_chips,
            'job': self.job, 'refused': self.refused,
            'plans': [dict(dataclasses.asdict(plan), projection=projection(plan, self.tpu_slice),
                           suggestions=suggestions(plan)) for plan in self.plans],
            'fastest_fitting': self.plans.index(best) if best is not None else None}

"""Does the compiled step fit? XLA's memory analysis against the device's memory.

An out-of-memory error is the most common way a new config fails, and XLA's
own message (`RESOURCE_EXHAUSTED: Out of memory allocating 39047750912 bytes`
inside a 50-line traceback) names neither the model nor what to change.
`check_fits` compares what the compiled train step needs on one device (its
arguments, outputs and temporaries, from `Compiled.memory_analysis()`) with
what the device has, right after compiling and before anything else runs;
`explain_out_of_memory` turns an allocation failure at compile or run time
into the same one-line `ConfigError`.
"""

import contextlib
import dataclasses
import math
import os
from typing import Any, Iterator

import jax

from resnet_jax import parallel
from resnet_jax.errors import ConfigError

_GIB = 2**30
# Of a CPU host's available memory, what one run may plan to use: the rest is
# the OS, the input pipeline and the Python heap.
_HOST_FRACTION = 0.9


def step_bytes(compiled) -> dict[str, int] | None:
  """Bytes one device needs to run `compiled`, by kind, or None if XLA cannot say."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    # Backends without the analysis raise NotImplementedError or similar.
    return None
  if analysis is None:
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  parts = {
      'arguments': analysis.argument_size_in_bytes,
      'outputs': analysis.output_size_in_bytes - analysis.alias_size_in_bytes,
      'temporaries': analysis.temp_size_in_bytes,
      'code': analysis.generated_code_size_in_bytes,
  }
  parts['total'] = sum(parts.values())
  return parts


def device_bytes() -> tuple[int | None, str]:
  """(bytes one local device can hold, where that figure comes from).

  Accelerators report their allocator's limit. CPU devices share the host's
  memory: what is available now, split over the local devices.
  """
  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']), device.device_kind
  available = _host_available_bytes()
  if available is None:
    return None, device.device_kind
  n = jax.local_device_count()
  where = 'the host' if n == 1 else f'1/{n} of the host'
  return int(available * _HOST_FRACTION / n), f'{where} ({device.device_kind})'


def _host_available_bytes() -> int | None:
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    return None


@dataclasses.dataclass(frozen=True)
class StepInfo:
  """What an out-of-memory message names: the model, batch, dtype and image size."""
  model: str
  batch_size: int
  dtype: str
  image_size: int

  def describe(self) -> str:
    layout = parallel.batch_layout(self.batch_size)
    n = layout.global_size // layout.per_device
    return (f'{self.model} at batch {layout.global_size} ({layout.per_device} per '
            f'device on {n} device(s)), {self.dtype}, {self.image_size}x'
            f'{self.image_size} images')

  def advice(self, fits_batch: int | None) -> str:
    layout = parallel.batch_layout(self.batch_size)
    n = layout.global_size // layout.per_device
    smaller = (f'--config.batch_size={fits_batch}' if fits_batch else
               f'a smaller --config.batch_size (a multiple of {n})')
    dtype = '' if self.dtype != 'float32' else ', --config.dtype=bfloat16'
    return f'Use {smaller}{dtype}, or a smaller model'


def check_fits(compiled, info: StepInfo) -> None:
  """Raises ConfigError when the compiled train step needs more than a device has.

  Args:
    compiled: the compiled train step (`jax.stages.Compiled`).
    info: what the step is (for the message).
  """
  need = step_bytes(compiled)
  have, where = device_bytes()
  if need is None or have is None or need['total'] <= have:
    return
  layout = parallel.batch_layout(info.batch_size)
  # Arguments (the state) do not shrink with the batch; the rest roughly does.
  per_example = (need['total'] - need['arguments']) / max(1, layout.per_device)
  room = have - need['arguments']
  n = layout.global_size // layout.per_device
  fits = int(room // per_example) if per_example > 0 and room > 0 else 0
  # A power of two per device: the estimate is linear, real use is not quite.
  fits_batch = n * 2**int(math.log2(fits)) if fits >= 1 else None
  raise ConfigError(
      f'out of memory: the train step of {info.describe()} needs '
      f'{need["total"] / _GIB:.1f} GiB per device (XLA memory analysis of the '
      f'compiled step: {need["arguments"] / _GIB:.1f} GiB state and batch, '
      f'{need["temporaries"] / _GIB:.1f} GiB temporaries), but {where} has '
      f'{have / _GIB:.1f} GiB. {info.advice(fits_batch)}')


def is_out_of_memory(error: BaseException) -> bool:
  """Whether an XLA error is an allocation failure."""
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'Out of memory' in text or (
      'out of memory' in text)


@contextlib.contextmanager
def explain_out_of_memory(info: StepInfo) -> Iterator[None]:
  """Turns an XLA allocation failure inside the block into a one-line ConfigError."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if not is_out_of_memory(e):
      raise
    have, where = device_bytes()
    has = f' ({where} has {have / _GIB:.1f} GiB)' if have else ''
    first = next((l.strip() for l in str(e).splitlines() if l.strip()), '')
    raise ConfigError(
        f'out of memory running the train step of {info.describe()}{has}: '
        f'{first[:200]}. {info.advice(None)}') from None


def describe_fit(compiled) -> dict[str, Any]:
  """{'step_gib': ..., 'device_gib': ...} for logs and benchmarks (None if unknown)."""
  need = step_bytes(compiled)
  have, _ = device_bytes()
  return {'step_gib': None if need is None else need['total'] / _GIB,
          'device_gib': None if have is None else have / _GIB}

"""Where batches live: processes, local devices, batch splits, device transfer.

Every input path (tf.data, on-device, fake) splits the GLOBAL `config.batch_size`
the same way: per process `batch_size // process_count`, per local device that
divided by `local_device_count`, laid out [local_devices, per_device, ...] as
`jax.pmap` expects. The topology functions are module-level so tests can
simulate several processes inside one.
"""

import collections
import dataclasses
import itertools
import math
from typing import Any, Iterable, Iterator

import jax
import numpy as np

from resnet_jax.errors import ConfigError


def process_index() -> int:
  """This process's index (jax.process_index)."""
  return jax.process_index()


def process_count() -> int:
  """Number of processes (jax.process_count)."""
  return jax.process_count()


def local_devices() -> list[Any]:
  """This process's devices, in the order jax.pmap uses them."""
  return jax.local_devices()


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """How one global batch is split over processes and local devices."""
  global_size: int
  per_process: int
  per_device: int
  num_local_devices: int

  @property
  def shape(self) -> tuple[int, int]:
    return (self.num_local_devices, self.per_device)


def batch_layout(global_size: int, field: str = 'batch_size') -> BatchLayout:
  """Splits a global batch size over all devices of all processes.

  Args:
    global_size: the global batch size (over every device of every process).
    field: the config field it came from, named in the error message.

  Returns:
    The per-process and per-device sizes.

  Raises:
    ConfigError: `global_size` is not a positive multiple of the device count.
  """
  n_proc = process_count()
  n_local = len(local_devices())
  n_total = n_proc * n_local
  if global_size <= 0 or global_size % n_total:
    raise ConfigError(
        f'{field}={global_size} must be a positive multiple of the number of '
        f'devices, {n_total} ({n_proc} process(es) x {n_local} local '
        f'device(s)); e.g. --config.{field}={max(1, global_size // n_total) * n_total}')
  return BatchLayout(global_size=global_size,
                     per_process=global_size // n_proc,
                     per_device=global_size // n_total,
                     num_local_devices=n_local)


def train_layout(config) -> BatchLayout:
  """Layout of config.batch_size."""
  return batch_layout(config.batch_size, 'batch_size')


def eval_layout(config) -> BatchLayout:
  """Layout of config.eval_batch_size (0: batch_size)."""
  if config.eval_batch_size:
    return batch_layout(config.eval_batch_size, 'eval_batch_size')
  return batch_layout(config.batch_size, 'batch_size')


def num_eval_batches(config, num_eval: int, layout: BatchLayout) -> int:
  """Eval batches per process: enough for the largest process shard.

  Every process runs this many (the shorter shards pad with masked examples),
  so pmapped collectives in the eval step never wait for a missing process.
  `config.num_eval_batches > 0` caps it.
  """
  largest_shard = math.ceil(num_eval / process_count())
  n = math.ceil(largest_shard / layout.per_process)
  if config.num_eval_batches > 0:
    n = min(n, config.num_eval_batches)
  return n


def epoch_seed(seed: int, epoch: int, purpose: int) -> int:
  """A 31-bit seed that depends on (seed, epoch, purpose) only.

  SeedSequence mixes the inputs so that neighbouring epochs and seeds give
  unrelated shuffles (seed + epoch would make run 1 epoch 0 equal run 0 epoch 1).
  """
  state = np.random.SeedSequence([seed, epoch, purpose]).generate_state(1)[0]
  return int(state) & 0x7FFFFFFF


# `purpose` tags for epoch_seed, so file order, shuffle and augmentation draw
# independent randomness.
SHUFFLE, AUGMENT, FILES = 1, 2, 3


def _pmap_sharding():
  devices = local_devices()
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))


def to_devices(tree: Any) -> Any:
  """Puts host arrays shaped [local_devices, ...] onto the local devices.

  The leading axis is split over `jax.local_devices()` in pmap order, which is
  where `jax.pmap` expects its inputs: the step then starts without a copy.
  """
  sharding = _pmap_sharding()
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def prefetch_to_devices(batches: Iterable[Any], size: int) -> Iterator[Any]:
  """Keeps `size` batches in flight to the devices ahead of the consumer.

  Like `flax.jax_utils.prefetch_to_device`, without its per-device re-stacking
  copy (our host batches are already laid out [local_devices, ...]).
  `jax.device_put` is asynchronous, so the transfer overlaps the running step.
  """
  sharding = _pmap_sharding()
  queue = collections.deque()
  batches = iter(batches)

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(jax.tree.map(lambda x: jax.device_put(x, sharding), batch))

  enqueue(max(1, size))
  while queue:
    yield queue.popleft()
    enqueue(1)

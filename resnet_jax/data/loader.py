"""Host batches with grain: one order for any number of processes, resumable at any step.

Position g = step * B + row of the training stream (B the GLOBAL batch) is in
epoch e = g // (steps_per_epoch * B) and shows example order_e[g mod
(steps_per_epoch * B)], order_e grain's index shuffle of the split seeded by
(seed, e); example g is augmented from (seed, g); process p of P reads rows
[p * B/P, (p + 1) * B/P). So step s depends on (seed, s) alone, and resuming is
index arithmetic (no iterator state to checkpoint). Evaluation pads positions
past the split (mask False): every example once, as many batches on every process.
Per-example work and batching run in `workers` processes (grain's mp_prefetch).
"""

import atexit
import dataclasses
import functools
import sys
from typing import Any, Callable, Iterator

import grain
import numpy as np

SHUFFLE, AUGMENT = 1, 2


def mixed_seed(seed: int, purpose: int) -> int:
  """A 32-bit seed of (seed, purpose), well mixed: grain seeds epoch e with seed + e,
  so unmixed seeds would make run 1's epoch 0 run 0's epoch 1."""
  return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class Layout:
  """This process's rows of a global batch: [index * size, (index + 1) * size)."""
  global_size: int
  index: int
  count: int

  @property
  def size(self) -> int:
    return self.global_size // self.count


class TrainStream(grain.MapDataset):
  """Position g of the training stream -> the record of the example it shows;
  `.example(g)` gives the order.

  With `repeats` k > 1 (repeated augmentation, timm's RepeatAugSampler), the
  epoch's order shows each example k times running, augmented differently,
  and an epoch keeps its length (so it covers 1/k of the split); row r of a
  global batch B shows the batch's position (r mod B/k) * k + r // (B/k), so
  the k copies sit B/k rows apart: on different devices wherever there are k
  or more, as timm spreads them over processes.
  """

  def __init__(self, source, *, seed: int, steps_per_epoch: int, global_batch: int,
               repeats: int = 1):
    super().__init__(grain.MapDataset.range(len(source)).shuffle(seed=mixed_seed(seed, SHUFFLE)))
    self._source, self._n, self._per_epoch = source, len(source), steps_per_epoch * global_batch
    self._batch, self._k = global_batch, repeats

  def __len__(self) -> int:
    return sys.maxsize

  def example(self, position: int) -> int:
    if self._k > 1:
      b, r = divmod(position, self._batch)
      per_copy = self._batch // self._k
      position = b * self._batch + (r % per_copy) * self._k + r // per_copy
    epoch, i = divmod(position, self._per_epoch)
    return self._parent[epoch * self._n + i // self._k]

  def __getitem__(self, index):
    return self.slice(index) if isinstance(index, slice) else self._source[self.example(index)]


class _EvalStream(grain.MapDataset):
  """Position g -> example g with mask True, or past the split the padding."""

  def __init__(self, source, transform: Callable, *, length: int, padding: dict):
    super().__init__()
    self._source, self._transform, self._length, self._padding = (
        source, transform, length, padding)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if index >= len(self._source):
      return self._padding
    return {**self._transform(self._source[index], None), 'mask': np.True_}


@functools.cache
def _free_shared_memory_at_exit() -> None:
  """grain frees consumed batches' shared memory on a daemon thread pool; what it
  has not got to at exit is reported as leaked by Python's resource tracker.
  Waiting for the pool (and freeing later ones directly) avoids both."""
  def wait():
    from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top
    array = shared_memory_array.SharedMemoryArray
    pool, array._del_thread_pool = getattr(array, '_del_thread_pool', None), None
    if pool is not None:
      pool.close()
      pool.join()

  atexit.register(wait)


def _iterate(batches: grain.MapDataset, workers: int) -> Iterator[Any]:
  """Iterates a dataset of batches in `workers` processes (0: this one)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags.
  # One thread per process computes batches: the work is CPU bound, and more
  # threads would only contend for the GIL.
  dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers > 0:
    _free_shared_memory_at_exit()
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
  iterator = iter(dataset)
  try:
    yield from iterator
  finally:
    getattr(iterator, 'close', lambda: None)()


def train_batches(source, transform: Callable, *, seed: int, steps_per_epoch: int,
                  layout: Layout, start_step: int = 0, workers: int = 0, repeats: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of every training batch from `start_step` on, endless:
  `transform(record, np.random.Generator)` of the records `TrainStream` orders,
  made in `workers` processes."""
  stream = TrainStream(source, seed=seed, steps_per_epoch=steps_per_epoch,
                       global_batch=layout.global_size, repeats=repeats)
  batches = stream.random_map(transform, seed=mixed_seed(seed, AUGMENT)).batch(layout.size)
  return _iterate(batches[start_step * layout.count + layout.index::layout.count], workers)


def eval_batches(source, transform: Callable, *, layout: Layout, num_batches: int,
                 image_shape: tuple[int, ...], workers: int = 0
                 ) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of `num_batches` padded eval batches, with 'mask'."""
  padding = {'image': np.zeros(image_shape, np.uint8), 'label': np.int32(0), 'mask': np.False_}
  stream = _EvalStream(source, transform, length=num_batches * layout.global_size,
                       padding=padding)
  return _iterate(stream.batch(layout.size)[layout.index::layout.count], workers)


def materialize(source, transform: Callable, *, image_shape: tuple[int, ...],
                workers: int = 0, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Every record of `source` through `transform`, in order: (images, labels)."""
  n = len(source)
  parts = list(eval_batches(source, transform, layout=Layout(batch, 0, 1),
                            num_batches=-(-n // batch), image_shape=image_shape,
                            workers=workers))
  return (np.concatenate([p['image'] for p in parts])[:n],
          np.concatenate([p['label'] for p in parts])[:n])

"""Host batches with grain: one order for every process count, resumable at any step.

Training is a stream of positions g = step * B + row over the GLOBAL batch B.
Position g lies in epoch e = g // (steps_per_epoch * B) and is example
order_e[g mod (steps_per_epoch * B)], where order_e is grain's index shuffle
of the split seeded by (seed, e): each epoch is a fresh permutation, cut to
whole batches. Example g is augmented with a generator that grain seeds from
(seed, g). Process p of P reads rows [p * B/P, (p + 1) * B/P) of every global
batch. So what step s trains on depends on (seed, s) alone, not on how many
processes, devices or worker processes there are; resuming at step s starts
the same stream at s * B (index arithmetic: no iterator state to save).

Evaluation streams positions 0 .. num_batches * B - 1 the same way: position
g < N is example g (mask True), the rest padding (mask False), so every
example is counted once and every process runs the same number of batches.

Per-example work (decoding, cropping, augmentation) and batching run in
`workers` processes (grain's `mp_prefetch`); 0 runs them in this process.
"""

import dataclasses
import sys
from typing import Any, Callable, Iterator

import grain
import numpy as np

SHUFFLE, AUGMENT = 1, 2


def mixed_seed(seed: int, purpose: int) -> int:
  """A 32-bit seed depending on (seed, purpose) only, well mixed.

  grain seeds epoch e's shuffle with seed + e: hashing keeps run 1's epoch 0
  from being run 0's epoch 1.
  """
  return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


class _TrainStream(grain.MapDataset):
  """Position g of the training stream -> the record of the example it shows."""

  def __init__(self, source, *, seed: int, per_epoch: int):
    super().__init__(grain.MapDataset.range(len(source)).shuffle(
        seed=mixed_seed(seed, SHUFFLE)))
    self._source, self._n, self._per_epoch = source, len(source), per_epoch

  def __len__(self) -> int:
    return sys.maxsize

  def example(self, position: int) -> int:
    epoch, i = divmod(position, self._per_epoch)
    return self._parent[epoch * self._n + i]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._source[self.example(index)]


class _EvalStream(grain.MapDataset):
  """Position g -> {'image', 'label', 'mask'}: example g, or padding past the split."""

  def __init__(self, source, transform: Callable, *, length: int, padding: dict):
    super().__init__()
    self._source, self._transform = source, transform
    self._length, self._padding = length, padding

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if index < len(self._source):
      return {**self._transform(self._source[index], None), 'mask': np.True_}
    return self._padding


def _iterate(batches: grain.MapDataset, workers: int) -> Iterator[Any]:
  """Iterates a dataset of batches, in `workers` processes (0: this one)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags.
  # Inside a worker (or alone) one thread computes batches: the work is CPU
  # bound, and more threads per process only contend for the GIL.
  dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers > 0:
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
  iterator = iter(dataset)
  try:
    yield from iterator
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()


@dataclasses.dataclass(frozen=True)
class Layout:
  """This process's share of a global batch: rows [index * size, (index + 1) * size)."""
  global_size: int
  index: int
  count: int

  @property
  def size(self) -> int:
    return self.global_size // self.count


def train_stream(source, *, seed: int, steps_per_epoch: int, global_batch: int
                 ) -> _TrainStream:
  """The training stream's positions -> records (also gives the epoch orders)."""
  return _TrainStream(source, seed=seed, per_epoch=steps_per_epoch * global_batch)


def train_batches(source, transform: Callable, *, seed: int, steps_per_epoch: int,
                  layout: Layout, start_step: int = 0, workers: int = 0
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of every training batch from `start_step` on, endless.

  Args:
    source: random-access records (sources.py).
    transform: (record, np.random.Generator) -> {'image': uint8, 'label': int32}.
    seed: the run's seed.
    steps_per_epoch: batches per epoch (the split's remainder is dropped).
    layout: the global batch and this process's rows of it.
    start_step: the first step to produce (a resumed run's).
    workers: worker processes.

  Returns:
    An iterator of {'image': uint8 [layout.size, H, W, C], 'label': int32 [...]}.
  """
  stream = train_stream(source, seed=seed, steps_per_epoch=steps_per_epoch,
                        global_batch=layout.global_size)
  batches = stream.random_map(transform, seed=mixed_seed(seed, AUGMENT)).batch(layout.size)
  first = start_step * layout.count + layout.index
  return _iterate(batches[first::layout.count], workers)


def eval_batches(source, transform: Callable, *, layout: Layout, num_batches: int,
                 image_shape: tuple[int, ...], workers: int = 0
                 ) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `num_batches` padded, masked eval batches."""
  padding = {'image': np.zeros(image_shape, np.uint8), 'label': np.int32(0),
             'mask': np.False_}
  stream = _EvalStream(source, transform, length=num_batches * layout.global_size,
                       padding=padding)
  return _iterate(stream.batch(layout.size)[layout.index::layout.count], workers)


def materialize(source, transform: Callable, *, image_shape: tuple[int, ...],
                workers: int = 0, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Every record of `source` through `transform`, in order: (images, labels)."""
  n = len(source)
  num_batches = -(-n // batch)
  images = np.empty((n, *image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  for i, b in enumerate(eval_batches(source, transform, layout=Layout(batch, 0, 1),
                                     num_batches=num_batches, image_shape=image_shape,
                                     workers=workers)):
    rows = slice(i * batch, min(n, (i + 1) * batch))
    images[rows] = b['image'][:rows.stop - rows.start]
    labels[rows] = b['label'][:rows.stop - rows.start]
  return images, labels

"""Random-access sources: a dataset's splits as `len()` + `[i] -> (image, label)`.

What the loader reads (grain's RandomAccessDataSource protocol), whatever the
kind: `ArraySource` (decoded uint8 arrays: a folder's memory-mapped index, or
in memory), `EncodedSource` (JPEG/PNG bytes from files, a packed archive or
tfds' data source), `FakeSource` (random images). `open_dataset` is the one
choice by kind. Split expressions ('train[:45000]', 'train[90%:]+test')
select rows of the named splits the same way for every kind. Sources are
pickled into worker processes: they hold paths and small arrays, and open
files lazily in each process.
"""

import dataclasses
import re
from typing import Any, Callable, Sequence

import numpy as np

from resnet_jax.data import spec as spec_lib
from resnet_jax.errors import ConfigError

# A source of several splits' rows: (split name, first row, end row) pieces.
Piece = tuple[str, int, int]


def parse_split(expression: str, sizes: dict[str, int]) -> list[Piece]:
  """The rows of 'name', 'name[a:b]' (rows; negative from the end), 'name[:10%]'
  (percent, to the nearest row) or 'a+b', clipped like Python's; ConfigError if bad."""
  pieces = []
  for part in expression.split('+'):
    match = re.fullmatch(r'\s*([A-Za-z]\w*)\s*(?:\[\s*([-\d%]*)\s*:\s*([-\d%]*)\s*\])?\s*',
                         part)
    if not match:
      raise ConfigError(f'split {expression!r}: cannot read {part!r}; write a split name '
                        "optionally sliced, e.g. 'train', 'train[:45000]', "
                        "'train[90%:]', 'train+test'")
    name, lo, hi = match.groups()
    if name not in sizes:
      raise ConfigError(f'split {name!r} does not exist (splits: {sorted(sizes)})')
    n = sizes[name]
    bound = lambda text, default: default if not text else int(round(
        n * int(text[:-1]) / 100)) if text.endswith('%') else int(text)
    start, stop, _ = slice(bound(lo, 0), bound(hi, n)).indices(n)
    pieces.append((name, start, max(start, stop)))
  return pieces


class _Source:
  """Rows of some splits, `pieces` [(split, first row, end row)], indexed 0..len-1.

  `open_split(split)` runs once per split in each process, so memory-mapped
  files open in each worker instead of being pickled into it.
  """

  def __init__(self, pieces: Sequence[Piece], open_split: Callable[[str], Any]):
    self.pieces = list(pieces)
    self._offsets = np.cumsum([0] + [stop - start for _, start, stop in self.pieces])
    self._open, self._opened = open_split, {}

  def __getstate__(self):
    return {**self.__dict__, '_opened': {}}

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def _split(self, name: str):
    if name not in self._opened:
      self._opened[name] = self._open(name)
    return self._opened[name]

  def locate(self, index: int) -> tuple[Any, int]:
    """(the opened split, row) of example `index`."""
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} outside [0, {len(self)})')
    p = int(np.searchsorted(self._offsets, index, side='right')) - 1
    return self._split(self.pieces[p][0]), self.pieces[p][1] + index - int(self._offsets[p])


class ArraySource(_Source):
  """Decoded images: `open_split(split) -> (uint8 [N, H, W, 3], int32 [N])`."""

  decoded = True

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    (images, labels), row = self.locate(index)
    return images[row], int(labels[row])

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """All rows at once: (images [N, H, W, 3], labels [N]) in source order."""
    parts = [(self._split(s)[0][a:b], self._split(s)[1][a:b]) for s, a, b in self.pieces]
    return (np.concatenate([np.asarray(i) for i, _ in parts]),
            np.concatenate([np.asarray(l, np.int32) for _, l in parts]))


def in_memory(images: np.ndarray, labels: np.ndarray) -> ArraySource:
  """An ArraySource over arrays in memory (one split), e.g. a dataset made in Python."""
  images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int32)
  return ArraySource([('all', 0, len(labels))], lambda _: (images, labels))


class EncodedSource(_Source):
  """Encoded images: `open_split(split) -> (row -> (JPEG/PNG bytes, label))`."""

  decoded = False

  def __getitem__(self, index: int) -> tuple[bytes, int]:
    read, row = self.locate(index)
    return read(row)


class FakeSource:
  """Random images and labels, a function of (seed, index % period): only `period`
  distinct examples (cheap to keep on the devices), epochs of `length`."""

  decoded = True
  period = 512

  def __init__(self, length: int, shape: tuple[int, int, int], num_classes: int,
               seed: int):
    self._length, self._shape = length, shape
    self._classes, self._seed = num_classes, seed

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([self._seed, index % self.period])
    image = rng.integers(0, 256, self._shape, dtype=np.uint8)
    return image, int(rng.integers(self._classes))

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The `period` distinct examples (index i is example i % period)."""
    examples = [self[i] for i in range(min(self.period, self._length))]
    return (np.stack([im for im, _ in examples]),
            np.array([label for _, label in examples], np.int32))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An opened dataset: its facts, a source per split used, the stored image size."""
  meta: spec_lib.DatasetMeta
  train: Any
  eval: Any
  native_hw: tuple[int | None, int | None]

  @property
  def decoded(self) -> bool:
    """Whether records are decoded arrays of one shape (can live on the devices)."""
    return self.train.decoded


def make_dataset(spec: spec_lib.DataSpec, *, sizes: dict[str, int], native_hw,
                 classes: Sequence[str] | int, statistics: Callable[[str], Any],
                 source: Callable[[list[Piece]], Any]) -> Dataset:
  """The Dataset from what a dataset kind read about itself; ConfigError if a split is bad.

  `sizes`: split -> examples; `native_hw`: the stored (height, width), None where
  images differ; `classes`: the class names or their number; `statistics(split)`:
  the (mean, std) measured on a split, or None; `source(pieces)`: those rows' source.
  Splits: the spec's, else 'train' and 'test' (or 'validation', 'val').
  """
  train = spec.train_split or 'train'
  evaluation = spec.eval_split or next(
      (s for s in ('test', 'validation', 'val') if s in sizes), '')
  if not evaluation:
    raise ConfigError(f'{spec.dataset!r} has no test or validation split (splits: '
                      f'{sorted(sizes)}); set --config.eval_split')
  rows = lambda split: sum(stop - start for _, start, stop in split)
  pieces = []
  for field, expression in (('train_split', train), ('eval_split', evaluation)):
    try:
      pieces.append(parse_split(expression, sizes))
    except ConfigError as e:
      raise ConfigError(f'{field}={expression!r} is not valid for {spec.dataset!r}: {e}'
                        ) from None
    if not rows(pieces[-1]):
      raise ConfigError(f'{field}={expression!r} selects no examples of {spec.dataset!r}')
  class_names = tuple(classes) if not isinstance(classes, int) else ()
  count = len(class_names) if class_names else int(classes)
  size = spec_lib.output_size(spec, native_hw)
  mean, std = spec_lib.statistics(spec, statistics(pieces[0][0][0]))  # Train's first split.
  meta = spec_lib.DatasetMeta(
      name=spec.dataset, num_classes=spec_lib.num_classes(spec, count),
      image_shape=(size, size, 3), num_train=rows(pieces[0]), num_eval=rows(pieces[1]),
      train_split=train, eval_split=evaluation, mean=mean, std=std,
      class_names=class_names)
  return Dataset(meta=meta, train=source(pieces[0]), eval=source(pieces[1]),
                 native_hw=native_hw)


def open_fake(spec: spec_lib.DataSpec) -> Dataset:
  """dataset='fake': CIFAR-10-sized splits of random images."""
  size = spec.image_size or spec_lib.IMAGENET_SIZE
  shape, classes = (size, size, 3), spec.num_classes or 1000
  mean, std = spec_lib.statistics(spec, None)
  meta = spec_lib.DatasetMeta(
      name=spec.dataset, num_classes=classes, image_shape=shape, num_train=50_000,
      num_eval=10_000, train_split='train', eval_split='test', mean=mean, std=std)
  return Dataset(meta=meta, train=FakeSource(meta.num_train, shape, classes, spec.seed),
                 eval=FakeSource(meta.num_eval, shape, classes, spec.seed + 1),
                 native_hw=(size, size))


def open_dataset(spec: spec_lib.DataSpec, *, prepare: bool = False) -> Dataset:
  """The dataset a DataSpec names, `prepare` as `data.open_input`'s; ConfigError (saying
  what to do) if it cannot be read."""
  if spec.kind == 'fake':
    return open_fake(spec)
  if spec.kind == 'folder':
    from resnet_jax.data import folder  # pylint: disable=g-import-not-at-top
    return folder.open_folder(spec)
  from resnet_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.open_tfds(spec, prepare=prepare)

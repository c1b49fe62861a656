"""Random-access sources: a dataset's splits as `len()` + `[i] -> (image, label)`.

Every dataset kind comes down to the same thing, which the loader reads
(grain's `RandomAccessDataSource` protocol):

- `ArraySource`: decoded uint8 images of one shape (memory-mapped `.npy`
  files of a folder's cache, or in-memory arrays); records are arrays.
- `EncodedSource`: encoded images (JPEG/PNG/... bytes) read one at a time
  from files, a packed blob, or a tfds `data_source`; records are bytes.
- `FakeSource`: deterministic random images (speed runs).

`open_dataset(spec)` is the one place that chooses by the dataset's kind.
Split expressions ('train', 'train[:45000]', 'train[10%:]+test') select rows
of the named splits (`parse_split`), the same way for every kind. Sources
are pickled into the loader's worker processes: they hold paths and small
index arrays, and open their files lazily in each process.
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
  """The rows a split expression selects: 'name', 'name[a:b]', 'name[:10%]', 'a+b'.

  Bounds are row indices (negative from the end) or whole percentages of the
  split (rounded to the nearest row); slices are clipped like Python's.

  Raises:
    ConfigError: an unknown split or a malformed expression.
  """
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

    def bound(text, default):
      if not text:
        return default
      if text.endswith('%'):
        return int(round(n * int(text[:-1]) / 100))
      return int(text)

    start, stop, _ = slice(bound(lo, 0), bound(hi, n)).indices(n)
    pieces.append((name, start, max(start, stop)))
  return pieces


class _Pieces:
  """Maps a source index to (split, row) over a list of pieces."""

  def __init__(self, pieces: Sequence[Piece]):
    self.pieces = list(pieces)
    self.offsets = np.cumsum([0] + [stop - start for _, start, stop in self.pieces])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def locate(self, index: int) -> tuple[str, int]:
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} outside [0, {len(self)})')
    p = int(np.searchsorted(self.offsets, index, side='right')) - 1
    split, start, _ = self.pieces[p]
    return split, start + index - int(self.offsets[p])


class ArraySource:
  """Decoded images: `images[split]` uint8 [N, H, W, 3] and `labels[split]` int32 [N].

  Args:
    pieces: the rows of each split this source covers.
    open_split: split name -> (images, labels); called once per process (so
      memory-mapped files open in each worker instead of being pickled).
  """

  decoded = True

  def __init__(self, pieces: Sequence[Piece], open_split: Callable[[str], tuple]):
    self._pieces = _Pieces(pieces)
    self._open = open_split
    self._arrays = {}

  def __getstate__(self):
    return {**self.__dict__, '_arrays': {}}

  def _split(self, name: str):
    if name not in self._arrays:
      self._arrays[name] = self._open(name)
    return self._arrays[name]

  def __len__(self) -> int:
    return len(self._pieces)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    split, row = self._pieces.locate(index)
    images, labels = self._split(split)
    return images[row], int(labels[row])

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """All rows at once: (images [N, H, W, 3], labels [N]) in source order."""
    images, labels = [], []
    for split, start, stop in self._pieces.pieces:
      split_images, split_labels = self._split(split)
      images.append(np.asarray(split_images[start:stop]))
      labels.append(np.asarray(split_labels[start:stop], np.int32))
    return np.concatenate(images), np.concatenate(labels)


def in_memory(images: np.ndarray, labels: np.ndarray) -> ArraySource:
  """An ArraySource over arrays already in memory (one split)."""
  images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int32)
  return ArraySource([('all', 0, len(labels))], lambda _: (images, labels))


class EncodedSource:
  """Encoded images read one at a time: `read(split, row) -> bytes`, labels known.

  Args:
    pieces: the rows of each split this source covers.
    read: (split, row) -> the encoded image; must be picklable.
    labels: split name -> int32 labels of every row (None: read with the image,
      `read` then returns (bytes, label)).
  """

  decoded = False

  def __init__(self, pieces: Sequence[Piece], read: Callable[[str, int], Any],
               labels: dict[str, np.ndarray] | None = None):
    self._pieces = _Pieces(pieces)
    self._read = read
    self._labels = labels

  def __len__(self) -> int:
    return len(self._pieces)

  def __getitem__(self, index: int) -> tuple[bytes, int]:
    split, row = self._pieces.locate(index)
    if self._labels is None:
      return self._read(split, row)
    return self._read(split, row), int(self._labels[split][row])


class FakeSource:
  """Random uint8 images and labels, a pure function of (seed, index % period).

  Only `period` distinct examples exist, so keeping them all on the devices
  is cheap; the length still makes epochs as long as a CIFAR-sized dataset's.
  """

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


def default_splits(spec: spec_lib.DataSpec, sizes: dict[str, int]) -> tuple[str, str]:
  """(train_split, eval_split): the config's, else 'train' and 'test'/'validation'.

  Raises:
    ConfigError: no eval split to default to, or an expression that selects
      nothing a split has.
  """
  train = spec.train_split or 'train'
  evaluation = spec.eval_split or next(
      (s for s in ('test', 'validation', 'val') if s in sizes), '')
  if not evaluation:
    raise ConfigError(f'{spec.dataset!r} has no test or validation split (splits: '
                      f'{sorted(sizes)}); set --config.eval_split')
  for field, expression in (('train_split', train), ('eval_split', evaluation)):
    try:
      pieces = parse_split(expression, sizes)
    except ConfigError as e:
      raise ConfigError(f'{field}={expression!r} is not valid for {spec.dataset!r}: {e}'
                        ) from None
    if not sum(stop - start for _, start, stop in pieces):
      raise ConfigError(f'{field}={expression!r} selects no examples of {spec.dataset!r}')
  return train, evaluation


def make_meta(spec: spec_lib.DataSpec, *, sizes: dict[str, int], train: str,
              evaluation: str, native_hw, classes: Sequence[str] | int,
              statistics=None) -> spec_lib.DatasetMeta:
  """DatasetMeta from what a dataset kind read about itself."""
  class_names = tuple(classes) if not isinstance(classes, int) else ()
  count = len(class_names) if class_names else int(classes)
  size = spec_lib.output_size(spec, native_hw)
  mean, std = spec_lib.statistics(spec, statistics)
  total = lambda e: sum(stop - start for _, start, stop in parse_split(e, sizes))
  return spec_lib.DatasetMeta(
      name=spec.dataset, num_classes=spec_lib.num_classes(spec, count),
      image_shape=(size, size, 3), num_train=total(train), num_eval=total(evaluation),
      train_split=train, eval_split=evaluation, mean=mean, std=std,
      class_names=class_names)


def open_fake(spec: spec_lib.DataSpec) -> Dataset:
  """dataset='fake': CIFAR-10-sized splits of random images."""
  size = spec.image_size or spec_lib.IMAGENET_SIZE
  classes = spec.num_classes or 1000
  sizes = {'train': 50_000, 'test': 10_000}
  meta = make_meta(spec, sizes=sizes, train='train', evaluation='test',
                   native_hw=(size, size), classes=classes)
  shape = (size, size, 3)
  return Dataset(meta=meta, train=FakeSource(sizes['train'], shape, classes, spec.seed),
                 eval=FakeSource(sizes['test'], shape, classes, spec.seed + 1),
                 native_hw=(size, size))


def open_dataset(spec: spec_lib.DataSpec, *, prepare: bool = False) -> Dataset:
  """Opens the dataset a DataSpec names: meta and train/eval sources.

  Args:
    spec: the resolved data spec.
    prepare: a tfds dataset that is not prepared may be prepared (and
      downloaded when spec.download allows); False refuses at once, saying how
      to prepare it. A folder is indexed on first use either way.

  Raises:
    ConfigError: unknown or unavailable dataset, bad splits or layout; the
      message says what to do.
  """
  if spec.kind == 'fake':
    return open_fake(spec)
  if spec.kind == 'folder':
    from resnet_jax.data import folder  # pylint: disable=g-import-not-at-top
    return folder.open_folder(spec)
  from resnet_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.open_tfds(spec, prepare=prepare)


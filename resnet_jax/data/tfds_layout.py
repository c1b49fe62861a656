"""How tfds lays out and reads a split, in pure Python (no TensorFlow).

`pil_folder` yields the arrays the tfds folder path would read, in the same
order; that order is tfds', reproduced here and tested against tfds itself
(tests/test_data_pil_folder.py): each split is stored sorted by the MD5 of
(split name, 'split/class/file') (`storage_order`), cut into shards by tfds'
size rule (`record_size`, `num_shards`, `shard_lengths_for`); a split
expression such as 'train[:45000]+test' is parsed as tfds parses it
(`parse_split`), divided between processes as `tfds.even_splits` /
`tfds.split_for_jax_process` divide it (`process_pieces`), and read shard by
shard through tf.data's interleave (16 files at a time, 16 examples per turn:
`read_order`).
"""

import dataclasses
import hashlib
import re
from typing import Iterable, Sequence

import numpy as np


# tf.data interleave as tfds' reader sets it up (reader.py: cycle length 16
# when shuffling is not disabled; ReadConfig's block length 16).
_CYCLE_LENGTH = 16
_BLOCK_LENGTH = 16
# tfds' shard sizing (ShardConfig defaults) and per-record TFRecord overhead.
_MIN_SHARD_BYTES = 64 << 20
_MAX_SHARD_BYTES = 1024 << 20
_RECORD_OVERHEAD = 16


# --- Split expressions, as tfds reads them -------------------------------------

@dataclasses.dataclass(frozen=True)
class Piece:
  """Examples [start, end) of one split, in its stored order."""
  split: str
  start: int
  end: int

  def __len__(self):
    return max(0, self.end - self.start)


# tfds/core/splits.py grammar: 'name', 'name[a:b]' with a, b absolute
# (negative from the end), percents ('%') or shards ('shard'); '+' joins.
_SUB_SPEC = re.compile(r'^(?P<name>[\w-]+)(\[(?P<selector>[\d\w%:.-]+)\])?$')
_BOUND = re.compile(r'^((?P<val>-?[\d_.]+)(?P<unit>%|shard)?)?$')


def parse_split(spec: str, sizes: dict[str, int],
                shard_lengths: dict[str, Sequence[int]]) -> list[Piece]:
  """The absolute pieces of a tfds split expression ('train[:45000]+test').

  Args:
    spec: the expression.
    sizes: examples per split, in the dataset's split order ('all' joins them).
    shard_lengths: examples per shard of each split (for 'shard' slices).

  Raises:
    ValueError: where tfds would refuse the expression (same conditions).
  """
  pieces = []
  for sub in re.split(r'\s*\+\s*', str(spec)):
    match = _SUB_SPEC.match(sub)
    if not match:
      raise ValueError(f'unrecognized split format {sub!r}')
    name, selector = match['name'], match['selector']
    if name == 'all':
      if selector:
        raise ValueError("'all' does not take a slice")
      pieces += [Piece(s, 0, n) for s, n in sizes.items()]
      continue
    if name not in sizes:
      raise ValueError(f'unknown split {name!r}; the splits are {list(sizes)}')
    n = sizes[name]
    start, end, unit = None, None, 'abs'
    if selector is not None:
      bounds = [_BOUND.match(b) for b in selector.split(':')]
      if not all(bounds) or not any(b.group(0) for b in bounds):
        raise ValueError(f'unrecognized split format {sub!r}')
      if len(bounds) == 1:
        unit = bounds[0]['unit'] or 'abs'
        if unit != 'shard':
          raise ValueError(f'{sub!r}: absolute or percent bounds need slice '
                           'syntax ([a:b])')
        start = bounds[0]['val']
        end = int(start) + 1
      elif len(bounds) == 2:
        start, end = bounds[0]['val'], bounds[1]['val']
        unit = bounds[0]['unit'] or bounds[1]['unit'] or 'abs'
      else:
        raise ValueError(f'unrecognized split format {sub!r}')
      convert = float if unit == '%' else int
      start = None if start is None else convert(start)
      end = None if end is None else convert(end)
    if unit == '%':
      if abs(start or 0) > 100 or abs(end or 0) > 100:
        raise ValueError(f'{sub!r}: percent bounds must be in [-100, 100]')
      # tfds' 'closest' rounding (Python's round: half to even).
      start = 0 if start is None else int(round(start * n / 100.0))
      end = n if end is None else int(round(end * n / 100.0))
    elif unit == 'shard':
      lengths = list(shard_lengths[name])
      start = 0 if start is None else sum(lengths[:start])
      if end is not None and end <= 0:
        end += len(lengths)
      end = n if end is None else sum(lengths[:end])
    else:
      start = 0 if start is None else start
      end = n if end is None else end
    if abs(start) > n or abs(end) > n:
      raise ValueError(f'{sub!r}: slice [{start}:{end}] is incompatible with '
                       f'the {n} examples of {name!r}')
    pieces.append(Piece(name, start + n if start < 0 else start,
                        end + n if end < 0 else end))
  return pieces


def process_pieces(pieces: Iterable[Piece], *, index: int, count: int,
                   drop_remainder: bool) -> list[Piece]:
  """Process `index` of `count`'s part of each piece, as tfds.even_splits cuts it.

  Every piece is cut separately into `count` consecutive parts of
  len // count examples; the remainder is dropped (`drop_remainder`, as
  `split_for_jax_process(..., drop_remainder=True)`) or given one each to
  the first parts.
  """
  if not 0 <= index < count:
    raise ValueError(f'process index {index} is not in [0, {count})')
  out = []
  for p in pieces:
    n = p.end - p.start
    if n < 0:
      raise ValueError(f'{p.split}[{p.start}:{p.end}] cannot be split evenly')
    per, extra = divmod(n, count)
    start, end = p.start + per * index, p.start + per * (index + 1)
    if extra and not drop_remainder:
      start += min(index, extra)
      end += min(index + 1, extra)
    out.append(Piece(p.split, start, end))
  return out


def read_order(pieces: Iterable[Piece], shard_lengths: dict[str, Sequence[int]],
               ) -> list[Piece]:
  """The runs of stored examples that tfds yields for these pieces, in order.

  tfds turns each piece into one read per shard it overlaps, then reads them
  through tf.data's interleave: `_CYCLE_LENGTH` open reads, `_BLOCK_LENGTH`
  examples from each in turn; a finished read's slot takes the next read the
  next time round.
  """
  reads = []
  for p in pieces:
    offset = 0
    for length in shard_lengths[p.split]:
      lo, hi = max(p.start, offset), min(p.end, offset + length)
      if length and lo < hi:
        reads.append(Piece(p.split, lo, hi))
      offset += length
  runs = []
  slots = [None] * _CYCLE_LENGTH
  pending = iter(reads)
  inputs_left, open_reads, i = True, 0, 0
  while inputs_left or open_reads:
    if slots[i] is None:
      if inputs_left:
        nxt = next(pending, None)
        if nxt is None:
          inputs_left = False
        else:
          slots[i] = [nxt.split, nxt.start, nxt.end]
          open_reads += 1
        continue
      i = (i + 1) % _CYCLE_LENGTH
      continue
    split, pos, end = slots[i]
    if pos == end:  # Found finished when asked for its next example.
      slots[i] = None
      open_reads -= 1
      i = (i + 1) % _CYCLE_LENGTH
      continue
    take = min(_BLOCK_LENGTH, end - pos)
    if runs and runs[-1].split == split and runs[-1].end == pos:
      runs[-1] = Piece(split, runs[-1].start, pos + take)
    else:
      runs.append(Piece(split, pos, pos + take))
    slots[i][1] = pos + take
    if take == _BLOCK_LENGTH:
      i = (i + 1) % _CYCLE_LENGTH
  return runs


# --- How tfds stores a split: order, record sizes, shards ----------------------

def storage_order(split: str, keys: Sequence[str]) -> np.ndarray:
  """Indices that sort `keys` as tfds stores them: by MD5(split name + key)."""
  salt = hashlib.md5(split.encode('utf-8'))

  def hkey(key):
    h = salt.copy()
    h.update(key.replace('\\', '/').encode('utf-8'))
    return int(h.hexdigest(), 16)

  return np.array(sorted(range(len(keys)), key=lambda i: hkey(keys[i])), np.int64)


def _varint_len(n: int) -> int:
  return max(1, (n.bit_length() + 6) // 7)


def _field_len(payload: int) -> int:
  """Bytes of one length-delimited protobuf field (1-byte tag) with this payload."""
  return 1 + _varint_len(payload) + payload


def record_size(image_bytes: int, label: int, key: str) -> int:
  """Bytes of the serialized tf.train.Example tfds writes for one image.

  Features 'file_name' (bytes), 'image' (bytes), 'label' (packed int64):
  protobuf sizes, which decide the number of shards.
  """

  def entry(name: str, feature: int) -> int:  # A map entry {key, value: Feature}.
    return _field_len(len(name)) + _field_len(feature)

  def bytes_feature(n: int) -> int:  # Feature{bytes_list: BytesList{value: [n bytes]}}
    return _field_len(_field_len(n))

  int_feature = _field_len(_field_len(_varint_len(label)))  # Feature{Int64List{packed}}
  features = (_field_len(entry('file_name', bytes_feature(len(key.encode('utf-8')))))
              + _field_len(entry('image', bytes_feature(image_bytes)))
              + _field_len(entry('label', int_feature)))
  return _field_len(features)


def num_shards(total_bytes: int, num_examples: int) -> int:
  """The number of shards tfds writes for a split of this many bytes and examples."""
  total = total_bytes + num_examples * _RECORD_OVERHEAD
  most, least = total // _MIN_SHARD_BYTES, total // _MAX_SHARD_BYTES
  if least <= 1024 <= most and num_examples >= 1024:
    return 1024
  if least > 1024:
    n = 2048
    while n < least or num_examples < n:
      n += 1024
    return n
  for n in (512, 256, 128, 64, 32, 16, 8, 4, 2):
    if least <= n <= most and num_examples >= n:
      return n
  return 1


def shard_lengths_for(num_examples: int, shards: int) -> list[int]:
  """Examples per shard: tfds' boundaries round(n * i / shards)."""
  bounds = [0] + [round(num_examples * i / shards) for i in range(1, shards + 1)]
  return [b - a for a, b in zip(bounds, bounds[1:])]



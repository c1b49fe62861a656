"""'folder:PATH' datasets: a local image tree or archive, indexed once.

PATH is a directory or a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive laid out
`split/class/image` (optionally under one common top folder). The first use
reads every image once (a corrupt file is found here, never in training),
measures the per-channel statistics of each split, and writes an index to
`DATA_DIR/folder_<name>_<fingerprint>/v2/`:

- images of one shape whose decoded splits fit in `ARRAYS_LIMIT` bytes (CIFAR
  and the like): decoded uint8 arrays, memory-mapped by every reader;
- otherwise, from a directory: the file names (images are read where they
  are); from an archive: the encoded bytes packed in one file per split
  (an archive has no random access).

The fingerprint covers an archive's size and mtime (a directory's file names
and folder mtimes), so an edited source is indexed again and different
sources never collide. Concurrent first uses (several processes of one job)
wait for one another; a preparation that was interrupted leaves a temporary
directory that the next one removes.
"""

import bz2
import concurrent.futures
import dataclasses
import fcntl
import functools
import gzip
import hashlib
import io
import json
import logging
import lzma
import mmap
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from typing import Iterator

import numpy as np

from resnet_jax.data import sources
from resnet_jax.data import spec as spec_lib
from resnet_jax.errors import ConfigError

IMAGE_EXTENSIONS = frozenset(
    {'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'})
ARCHIVE_SUFFIXES = ('.tar.gz', '.tar.bz2', '.tar.xz', '.tgz', '.tar')
# Bump when the index format changes, so old indexes are not reused.
FORMAT = 2
ARRAYS_LIMIT = 4 << 30
_CHUNK = 256
_REPORTED_INDIVIDUALLY = 20
_STATS_PIXELS = 4096

log = logging.getLogger(__name__)
# Indexes opened in this process, by directory: a second open reads no file.
_OPENED = {}


def check_source(path: str, dataset: str) -> None:
  """Raises ConfigError unless `path` is a directory or an archive that exists."""
  if not os.path.exists(path):
    raise ConfigError(
        f'dataset {dataset!r}: {path} does not exist; folder datasets are a '
        'directory or a .tar/.tar.gz archive laid out split/class/image')
  if not os.path.isdir(path) and not path.endswith(ARCHIVE_SUFFIXES):
    raise ConfigError(f'dataset {dataset!r}: {path} is neither a directory nor an '
                      f'archive ({", ".join(ARCHIVE_SUFFIXES)})')


def index_dir(path: str, data_dir: str) -> str:
  """Where the index of `path` lives: DATA_DIR/folder_<slug>_<fingerprint>/v<FORMAT>."""
  base = os.path.basename(path.rstrip('/'))
  for suffix in ARCHIVE_SUFFIXES:
    if base.endswith(suffix):
      base = base[:-len(suffix)]
      break
  slug = re.sub(r'[^a-z0-9]+', '_', base.lower()).strip('_')[:40] or 'data'
  return os.path.join(data_dir, f'folder_{slug}_{_fingerprint(path)}', f'v{FORMAT}')


def _fingerprint(path: str) -> str:
  h = hashlib.sha256(f'format={FORMAT}'.encode())
  if os.path.isdir(path):
    # File names and folder mtimes: catches added, removed and renamed images
    # without stat-ing a million files on every start.
    for root, dirs, files in os.walk(path):
      dirs.sort()
      rel = os.path.relpath(root, path)
      h.update(f'\0d{rel}\0{os.stat(root).st_mtime_ns}'.encode())
      for f in sorted(files):
        h.update(f'\0f{f}'.encode())
  else:
    st = os.stat(path)
    h.update(f'\0a{st.st_size}\0{st.st_mtime_ns}'.encode())
  return h.hexdigest()[:12]


def _is_image_name(name: str) -> bool:
  parts = name.split('/')
  # Hidden files and macOS resource forks ('._x.jpg', '__MACOSX/') are not images.
  if any(p.startswith('.') and p not in ('.', '..') or p == '__MACOSX' for p in parts):
    return False
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _iter_source(path: str) -> Iterator[tuple[str, bytes | Exception]]:
  """(member path, bytes or the read error) for every image file, in order."""
  if not os.path.isdir(path):
    yield from _iter_archive(path)
    return
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for f in sorted(files):
      member = os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
      if _is_image_name(member):
        try:
          with open(os.path.join(root, f), 'rb') as fobj:
            yield member, fobj.read()
        except OSError as e:
          yield member, e


class _CountingReader:
  """A file object's `read`, counting the bytes it has returned."""

  def __init__(self, fobj):
    self._fobj = fobj
    self.count = 0

  def read(self, size=-1):
    data = self._fobj.read(size)
    self.count += len(data)
    return data


def _open_decompressed(path: str):
  """The archive's tar stream, decompressed by the module that checks its trailer.

  tarfile's own gzip/bz2/xz streams stop silently at a cut; gzip, bz2 and lzma
  raise EOFError when the compressed stream ends before its end marker.
  """
  with open(path, 'rb') as f:
    magic = f.read(6)
  if magic.startswith(b'\x1f\x8b'):
    return gzip.open(path, 'rb')
  if magic.startswith(b'BZh'):
    return bz2.open(path, 'rb')
  if magic.startswith(b'\xfd7zXZ\x00'):
    return lzma.open(path, 'rb')
  return open(path, 'rb')


def _iter_archive(path: str):
  """(member path, bytes) of an archive's images; ConfigError if it is damaged."""
  def damaged(why: str) -> ConfigError:
    return ConfigError(
        f'archive {path} is damaged or truncated ({why}); copy or download it '
        f'again (its size is {os.path.getsize(path):,} bytes)')

  try:
    with _open_decompressed(path) as raw:
      stream = _CountingReader(raw)
      # 'r|' reads the archive as a stream: no seeking, no extraction.
      with tarfile.open(fileobj=stream, mode='r|') as tar:
        for info in tar:
          member = info.name[2:] if info.name.startswith('./') else info.name
          if info.isfile() and _is_image_name(member):
            yield member, tar.extractfile(info).read()
        end_of_archive = tar.offset
      # tarfile ends quietly at a missing or partial header; only the
      # end-of-archive block means the stream was whole. Draining the rest
      # makes a compressed stream check its trailer.
      while stream.read(1 << 20):
        pass
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise damaged(f'{type(e).__name__}: {e}') from None
  if stream.count < end_of_archive + tarfile.BLOCKSIZE:
    raise damaged(f'it ends at byte {stream.count:,} of its tar stream, before '
                  'the end-of-archive block')


def _layout(path: str, member: str, prefix: list[str] | None
            ) -> tuple[list[str], str, str]:
  """(top-folder prefix, split, class) of an image at `member`, checking the layout."""
  parts = member.split('/')
  if len(parts) < 3 or (prefix is not None and parts[:-3] != prefix):
    raise ConfigError(
        f'{path}: {member!r} is not laid out like the other images; expected '
        "split/class/image (all under the same top folder), e.g. 'train/cat/0001.jpg'")
  split = parts[-3]
  if not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*', split):
    raise ConfigError(f'{path}: split folder {split!r} must be a name like '
                      "'train', 'test' or 'validation' (letters, digits, _)")
  return parts[:-3], split, parts[-2]


def _decode(data: bytes | Exception):
  """(uint8 RGB array, None) or (None, the reason it cannot be read)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(data, Exception):
    return None, f'{type(data).__name__}: {data}'
  if not data:
    return None, 'the file is empty (0 bytes)'
  try:
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image.convert('RGB')), None
  except Image.UnidentifiedImageError:
    return None, 'not an image format PIL reads'
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types (OSError, SyntaxError, ValueError...) for bad data.
    return None, f'{type(e).__name__}: {e}'


def _channel_sums(image: np.ndarray) -> np.ndarray:
  """[sum, sum of squares, count] per channel, over a subsample of the pixels."""
  stride = max(1, int((image.shape[0] * image.shape[1] / _STATS_PIXELS) ** 0.5))
  pixels = image[::stride, ::stride].reshape(-1, 3).astype(np.float64) / 255
  return np.stack([pixels.sum(0), (pixels ** 2).sum(0), np.full(3, len(pixels))])


@dataclasses.dataclass
class _Split:
  labels: list = dataclasses.field(default_factory=list)  # Class names.
  members: list = dataclasses.field(default_factory=list)
  images: list = dataclasses.field(default_factory=list)  # Decoded, while kept.
  sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 3)))
  blob: object = None  # Encoded bytes of an archive's split, as written.
  offsets: list = dataclasses.field(default_factory=lambda: [0])


def _scan(path: str, tmp: str, on_corrupt: str) -> dict:
  """Reads every image once; writes the split files into `tmp`; returns the index."""
  splits, corrupt, shapes = {}, [], set()
  prefix, decoded_bytes, keep_arrays = None, 0, True
  archive = not os.path.isdir(path)

  def add(member, data, image, reason):
    nonlocal prefix, decoded_bytes, keep_arrays
    prefix, split, label = _layout(path, member, prefix)
    if image is None:
      where = os.path.join(path, member) if not archive else f'{path}:{member}'
      if on_corrupt == 'error':
        raise ConfigError(f'unreadable image {where} ({reason}); remove or replace it, '
                          'or set --config.on_corrupt_image=skip to leave it out')
      corrupt.append(member)
      if len(corrupt) <= _REPORTED_INDIVIDUALLY:
        log.warning('skipping unreadable image %s: %s', where, reason)
      return
    s = splits.setdefault(split, _Split())
    s.labels.append(label)
    s.members.append(member)
    s.sums += _channel_sums(image)
    shapes.add(image.shape)
    decoded_bytes += image.nbytes
    if keep_arrays and (len(shapes) > 1 or decoded_bytes > ARRAYS_LIMIT):
      keep_arrays = False  # Stored encoded instead: free the decoded copies.
      for other in splits.values():
        other.images = []
    if keep_arrays:
      s.images.append(image)
    if archive:
      if s.blob is None:
        s.blob = open(os.path.join(tmp, f'{split}.blob'), 'wb')
      s.blob.write(data)
      s.offsets.append(s.offsets[-1] + len(data))

  # Decoding runs on a thread pool (PIL releases the GIL while it decodes),
  # overlapping the sequential reading of the source; a bounded number of
  # chunks in flight keeps memory flat for huge archives.
  workers = max(1, min(16, os.cpu_count() or 1))
  pending = []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    chunk = []
    for item in _iter_source(path):
      chunk.append(item)
      if len(chunk) == _CHUNK:
        pending.append((chunk, pool.submit(lambda c: [_decode(d) for _, d in c], chunk)))
        chunk = []
      while len(pending) > 2 * workers:
        done, future = pending.pop(0)
        for (member, data), result in zip(done, future.result()):
          add(member, data, *result)
    pending.append((chunk, pool.submit(lambda c: [_decode(d) for _, d in c], chunk)))
    for done, future in pending:
      for (member, data), result in zip(done, future.result()):
        add(member, data, *result)
  if not splits:
    raise ConfigError(f'{path} holds no readable images; expected split/class/image '
                      f'files with extensions {sorted(IMAGE_EXTENSIONS)}')
  class_names = sorted({l for s in splits.values() for l in s.labels})
  index = {name: i for i, name in enumerate(class_names)}
  storage = 'arrays' if keep_arrays else ('blob' if archive else 'files')
  info = {'format': FORMAT, 'source': path, 'class_names': class_names,
          'storage': storage, 'splits': {}, 'skipped_corrupt_images': len(corrupt),
          'corrupt_images': corrupt[:1000],
          'image_hw': list(next(iter(shapes))[:2]) if len(shapes) == 1 else None}
  for name, s in sorted(splits.items()):
    sums = s.sums
    mean = sums[0] / sums[2]
    info['splits'][name] = {
        'num_examples': len(s.labels), 'mean': mean.tolist(),
        # A channel that never varies would divide by zero: one level at least.
        'std': np.maximum(np.sqrt(np.maximum(sums[1] / sums[2] - mean ** 2, 0)),
                          1 / 255).tolist()}
    np.save(os.path.join(tmp, f'{name}.labels.npy'),
            np.array([index[l] for l in s.labels], np.int32))
    if s.blob is not None:
      s.blob.close()
    if storage == 'arrays':
      np.save(os.path.join(tmp, f'{name}.images.npy'), np.stack(s.images))
      s.images = []
    elif storage == 'blob':
      np.save(os.path.join(tmp, f'{name}.offsets.npy'), np.array(s.offsets, np.int64))
    else:
      with open(os.path.join(tmp, f'{name}.files.json'), 'w', encoding='utf-8') as f:
        json.dump(s.members, f)
  for name in splits:
    if storage != 'blob' and os.path.exists(os.path.join(tmp, f'{name}.blob')):
      os.remove(os.path.join(tmp, f'{name}.blob'))
  return info


def _write_index(path: str, directory: str, on_corrupt: str) -> None:
  """Scans `path` into a temporary directory beside `directory`, then renames it."""
  parent = os.path.dirname(directory)
  for stale in os.listdir(parent):
    # Left by an interrupted preparation: we hold the lock, so none is in use.
    if stale.startswith(f'.{os.path.basename(directory)}.tmp'):
      shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp', dir=parent)
  try:
    start = time.time()
    info = _scan(path, tmp, on_corrupt)
    info['seconds'] = round(time.time() - start, 3)
    with open(os.path.join(tmp, 'index.json'), 'w', encoding='utf-8') as f:
      json.dump(info, f, indent=1)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.warning('indexed %s: %d images (%s), %d unreadable skipped, in %.1f s; index in %s',
              path, sum(s['num_examples'] for s in info['splits'].values()),
              info['storage'], info['skipped_corrupt_images'], info['seconds'], directory)


def _index(spec: spec_lib.DataSpec) -> tuple[str, dict]:
  """(index directory, index.json) of spec's folder, indexing it on first use."""
  check_source(spec.path, spec.dataset)
  directory = index_dir(spec.path, spec.data_dir)
  if directory not in _OPENED:
    try:
      os.makedirs(os.path.dirname(directory), exist_ok=True)
    except OSError as e:
      raise ConfigError(f'cannot create the dataset cache {os.path.dirname(directory)}: '
                        f'{e.strerror or e}; set --config.data_dir to a writable '
                        'directory') from None
    with open(os.path.join(os.path.dirname(directory), '.lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      indexed_now = not os.path.exists(os.path.join(directory, 'index.json'))
      if indexed_now:
        _write_index(spec.path, directory, spec.on_corrupt)
    with open(os.path.join(directory, 'index.json'), encoding='utf-8') as f:
      _OPENED[directory] = json.load(f)
    skipped = _OPENED[directory]['skipped_corrupt_images']
    if skipped and not indexed_now:
      log.warning('%s: %d unreadable image(s) were skipped when it was indexed (listed '
                  'in %s/index.json)', spec.dataset, skipped, directory)
  return directory, _OPENED[directory]


def _open_arrays(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  return (np.load(os.path.join(directory, f'{split}.images.npy'), mmap_mode='r'),
          np.load(os.path.join(directory, f'{split}.labels.npy')))


class _BlobReader:
  """Encoded images of an archive's splits, packed one split per file."""

  def __init__(self, directory: str):
    self._directory = directory
    self._open = {}

  def __getstate__(self):
    return {'_directory': self._directory, '_open': {}}

  def __call__(self, split: str, row: int) -> bytes:
    if split not in self._open:
      with open(os.path.join(self._directory, f'{split}.blob'), 'rb') as f:
        blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
      offsets = np.load(os.path.join(self._directory, f'{split}.offsets.npy'))
      self._open[split] = (blob, offsets)
    blob, offsets = self._open[split]
    return blob[offsets[row]:offsets[row + 1]]


class _FileReader:
  """Encoded images read from the source directory, by the names indexed."""

  def __init__(self, root: str, directory: str):
    self._root, self._directory = root, directory
    self._names = {}

  def __getstate__(self):
    return {'_root': self._root, '_directory': self._directory, '_names': {}}

  def __call__(self, split: str, row: int) -> bytes:
    if split not in self._names:
      with open(os.path.join(self._directory, f'{split}.files.json'), encoding='utf-8') as f:
        self._names[split] = json.load(f)
    path = os.path.join(self._root, self._names[split][row])
    try:
      with open(path, 'rb') as f:
        return f.read()
    except OSError as e:
      raise ConfigError(f'cannot read {path} ({e.strerror or e}), which was there when '
                        f'the folder was indexed; restore it, or delete '
                        f'{self._directory} to index the folder again') from None


def open_folder(spec: spec_lib.DataSpec) -> sources.Dataset:
  """Opens a folder dataset (indexing it on first use)."""
  directory, info = _index(spec)
  sizes = {name: s['num_examples'] for name, s in info['splits'].items()}
  train, evaluation = sources.default_splits(spec, sizes)
  train_bases = [name for name, _, _ in sources.parse_split(train, sizes)]
  stats = info['splits'][train_bases[0]]
  hw = tuple(info['image_hw']) if info['image_hw'] else (None, None)
  meta = sources.make_meta(spec, sizes=sizes, train=train, evaluation=evaluation,
                           native_hw=hw, classes=info['class_names'],
                           statistics=(tuple(stats['mean']), tuple(stats['std'])))

  def source(expression):
    pieces = sources.parse_split(expression, sizes)
    if info['storage'] == 'arrays':
      return sources.ArraySource(pieces, functools.partial(_open_arrays, directory))
    labels = {name: np.load(os.path.join(directory, f'{name}.labels.npy')) for name in sizes}
    read = (_BlobReader(directory) if info['storage'] == 'blob'
            else _FileReader(info['source'], directory))
    return sources.EncodedSource(pieces, read, labels)

  return sources.Dataset(meta=meta, train=source(train), eval=source(evaluation),
                         native_hw=hw)

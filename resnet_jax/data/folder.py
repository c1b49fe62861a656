"""'folder:PATH' datasets: a local image tree or archive, indexed once.

PATH is a directory or a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive laid out
`split/class/image` (optionally under one common top folder). The first use
reads every image once (a corrupt file is found here, never in training),
measures each split's per-channel statistics, and writes the index: decoded
uint8 arrays (memory-mapped by every reader) when the images share one shape
and fit in ARRAYS_LIMIT bytes; otherwise a directory's file names, or an
archive's encoded bytes packed one file per split (an archive has no random
access). Concurrent first uses wait for one another.
"""

import bz2
import collections
import concurrent.futures
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

import numpy as np

from resnet_jax.data import sources
from resnet_jax.data import spec as spec_lib
from resnet_jax.errors import ConfigError

IMAGE_EXTENSIONS = frozenset(
    {'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'})
ARCHIVE_SUFFIXES = ('.tar.gz', '.tar.bz2', '.tar.xz', '.tgz', '.tar')
FORMAT = 2  # Bumped when the index format changes: old indexes are not reused.
ARRAYS_LIMIT = 4 << 30
_CHUNK = 256
_REPORTED = 20  # Unreadable images named one by one; the index lists them all.
_STATS_PIXELS = 4096
log = logging.getLogger(__name__)
_OPENED = {}  # Indexes read by this process, by directory.


def index_dir(path: str, data_dir: str) -> str:
  """Where the index of `path` lives: DATA_DIR/folder_<slug>_<fingerprint>/v<FORMAT>; the
  fingerprint changes when the source is edited."""
  base = re.sub(r'(\.tar(\.gz|\.bz2|\.xz)?|\.tgz)$', '', os.path.basename(path.rstrip('/')))
  slug = re.sub(r'[^a-z0-9]+', '_', base.lower()).strip('_')[:40] or 'data'
  h = hashlib.sha256(f'format={FORMAT}'.encode())
  if os.path.isdir(path):
    for root, dirs, files in os.walk(path):
      dirs.sort()
      h.update(f'\0d{os.path.relpath(root, path)}\0{os.stat(root).st_mtime_ns}'.encode())
      h.update(''.join(f'\0f{f}' for f in sorted(files)).encode())
  else:
    st = os.stat(path)
    h.update(f'\0a{st.st_size}\0{st.st_mtime_ns}'.encode())
  return os.path.join(data_dir, f'folder_{slug}_{h.hexdigest()[:12]}', f'v{FORMAT}')


def _is_image(name: str) -> bool:
  # Hidden files and macOS resource forks ('._x.jpg', '__MACOSX/') are not images.
  if any(p.startswith('.') and p not in ('.', '..') or p == '__MACOSX'
         for p in name.split('/')):
    return False
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _read_source(path: str):
  """(member path, bytes or the read error) of every image, in order."""
  if not os.path.isdir(path):
    yield from _read_archive(path)
    return
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      member = os.path.relpath(os.path.join(root, name), path).replace(os.sep, '/')
      if _is_image(member):
        try:
          with open(os.path.join(root, name), 'rb') as f:
            yield member, f.read()
        except OSError as e:
          yield member, e


def _read_archive(path: str):
  """(member, bytes) of an archive's images; ConfigError naming it if it is damaged."""
  size = os.path.getsize(path)
  damaged = lambda why: ConfigError(f'archive {path} is damaged or truncated ({why}); '
                                    f'copy or download it again (its size is {size:,} bytes)')
  with open(path, 'rb') as f:
    magic = f.read(6)
  # tarfile's own decompressors stop quietly at a cut; these raise EOFError.
  opener = (gzip.open if magic.startswith(b'\x1f\x8b') else bz2.open if magic.startswith(
      b'BZh') else lzma.open if magic.startswith(b'\xfd7zXZ\x00') else open)
  try:
    with opener(path, 'rb') as raw:
      with tarfile.open(fileobj=raw, mode='r|') as tar:  # A stream: no seeks.
        for info in tar:
          member = info.name[2:] if info.name.startswith('./') else info.name
          if info.isfile() and _is_image(member):
            yield member, tar.extractfile(info).read()
        end = tar.offset
      # tarfile also ends quietly at a missing header: only the end-of-archive
      # block means it was whole. Draining makes a compressed stream check its trailer.
      while raw.read(1 << 20):
        pass
      read = raw.tell()
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise damaged(f'{type(e).__name__}: {e}') from None
  if read < end + tarfile.BLOCKSIZE:
    raise damaged(f'it ends at byte {read:,} of its tar stream, before the end-of-archive '
                  'block')


def _decode(data):
  """(uint8 RGB array, None), or (None, why it cannot be read)."""
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
    return None, f'{type(e).__name__}: {e}'  # PIL raises many types for bad data.


def _decoded(path: str):
  """(member, bytes, image or None, reason) of every image, in order.

  Decoding runs on a thread pool (PIL releases the GIL while it decodes),
  overlapping the sequential reading of the source; a bounded number of
  chunks in flight keeps memory flat for huge archives.
  """
  workers = max(1, min(16, os.cpu_count() or 1))
  decode = lambda chunk: [(member, data, *_decode(data)) for member, data in chunk]
  pending, chunk = collections.deque(), []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for item in _read_source(path):
      chunk.append(item)
      if len(chunk) == _CHUNK:
        pending.append(pool.submit(decode, chunk))
        chunk = []
      while len(pending) > 2 * workers or (pending and pending[0].done()):
        yield from pending.popleft().result()
    pending.append(pool.submit(decode, chunk))
    for future in pending:
      yield from future.result()


def _scan(path: str, tmp: str, on_corrupt: str) -> dict:
  """Reads every image once, writes the split files into `tmp`; returns the index."""
  archive = not os.path.isdir(path)
  splits, corrupt, shapes, prefix, decoded_bytes, arrays = {}, [], set(), None, 0, True
  for member, data, image, reason in _decoded(path):
    parts = member.split('/')
    if len(parts) < 3 or (prefix is not None and parts[:-3] != prefix):
      raise ConfigError(
          f'{path}: {member!r} is not laid out like the other images; expected '
          "split/class/image (all under the same top folder), e.g. 'train/cat/0001.jpg'")
    prefix, split, label = parts[:-3], parts[-3], parts[-2]
    if not re.fullmatch(r'[A-Za-z]\w*', split):
      raise ConfigError(f'{path}: split folder {split!r} must be a name like '
                        "'train', 'test' or 'validation' (letters, digits, _)")
    if image is None:
      where = f'{path}:{member}' if archive else os.path.join(path, member)
      if on_corrupt == 'error':
        raise ConfigError(f'unreadable image {where} ({reason}); remove or replace it, '
                          'or set --config.on_corrupt_image=skip to leave it out')
      corrupt.append(member)
      if len(corrupt) <= _REPORTED:
        log.warning('skipping unreadable image %s: %s', where, reason)
      continue
    s = splits.setdefault(split, {'labels': [], 'members': [], 'images': [],
                                  'sums': np.zeros((3, 3)), 'offsets': [0], 'blob': None})
    s['labels'].append(label)
    s['members'].append(member)
    stride = max(1, int((image.shape[0] * image.shape[1] / _STATS_PIXELS) ** 0.5))
    pixels = image[::stride, ::stride].reshape(-1, 3) / 255
    s['sums'] += [pixels.sum(0), (pixels ** 2).sum(0), [len(pixels)] * 3]
    shapes.add(image.shape)
    decoded_bytes += image.nbytes
    if arrays and (len(shapes) > 1 or decoded_bytes > ARRAYS_LIMIT):
      arrays = False  # Stored encoded: free the decoded copies.
      for other in splits.values():
        other['images'] = None
    if arrays:
      s['images'].append(image)
    if archive:
      s['blob'] = s['blob'] or open(os.path.join(tmp, f'{split}.blob'), 'wb')
      s['blob'].write(data)
      s['offsets'].append(s['offsets'][-1] + len(data))
  if not splits:
    raise ConfigError(f'{path} holds no readable images; expected split/class/image '
                      f'files with extensions {sorted(IMAGE_EXTENSIONS)}')
  class_names = sorted({l for s in splits.values() for l in s['labels']})
  info = {'format': FORMAT, 'source': path, 'class_names': class_names,
          'storage': 'arrays' if arrays else 'blob' if archive else 'files',
          'image_hw': list(shapes.pop()[:2]) if len(shapes) == 1 else None,
          'skipped_corrupt_images': len(corrupt), 'corrupt_images': corrupt[:1000],
          'splits': {}}
  for name, s in sorted(splits.items()):
    total, squares, count = s['sums']
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    info['splits'][name] = {'num_examples': len(s['labels']), 'mean': mean.tolist(),
                            'std': np.maximum(std, 1 / 255).tolist()}  # Never 0: it divides.
    labels = np.array([class_names.index(l) for l in s['labels']], np.int32)
    np.save(os.path.join(tmp, f'{name}.labels.npy'), labels)
    if s['blob']:
      s['blob'].close()
    if arrays:
      np.save(os.path.join(tmp, f'{name}.images.npy'), np.stack(s['images']))
      s['images'] = None
      if archive:
        os.remove(os.path.join(tmp, f'{name}.blob'))
    elif archive:
      np.save(os.path.join(tmp, f'{name}.offsets.npy'), np.array(s['offsets'], np.int64))
    else:
      with open(os.path.join(tmp, f'{name}.files.json'), 'w', encoding='utf-8') as f:
        json.dump(s['members'], f)
  return info


def _index(spec: spec_lib.DataSpec) -> tuple[str, dict]:
  """(index directory, index.json) of spec's folder, indexing it on first use."""
  if not os.path.exists(spec.path):
    raise ConfigError(f'dataset {spec.dataset!r}: {spec.path} does not exist; folder '
                      'datasets are a directory or a .tar/.tar.gz archive laid out '
                      'split/class/image')
  if not os.path.isdir(spec.path) and not spec.path.endswith(ARCHIVE_SUFFIXES):
    raise ConfigError(f'dataset {spec.dataset!r}: {spec.path} is neither a directory nor '
                      f'an archive ({", ".join(ARCHIVE_SUFFIXES)})')
  directory = index_dir(spec.path, spec.data_dir)
  parent, name = os.path.split(directory)
  if directory in _OPENED:
    return directory, _OPENED[directory]
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'cannot create the dataset index {parent}: {e.strerror or e}; set '
                      '--config.data_dir to a writable directory') from None
  with open(os.path.join(parent, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    indexed_now = not os.path.exists(os.path.join(directory, 'index.json'))
    if indexed_now:
      for stale in os.listdir(parent):  # An interrupted indexing's: none in use.
        if stale.startswith(f'.{name}.tmp'):
          shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
      tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp', dir=parent)
      try:
        start = time.time()
        info = _scan(spec.path, tmp, spec.on_corrupt)
        info['seconds'] = round(time.time() - start, 3)
        with open(os.path.join(tmp, 'index.json'), 'w', encoding='utf-8') as f:
          json.dump(info, f, indent=1)
        os.rename(tmp, directory)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
      log.warning('indexed %s: %d images (%s), %d unreadable skipped, in %.1f s; index '
                  'in %s', spec.path, sum(s['num_examples'] for s in info['splits'].values()),
                  info['storage'], info['skipped_corrupt_images'], info['seconds'], directory)
  with open(os.path.join(directory, 'index.json'), encoding='utf-8') as f:
    info = _OPENED[directory] = json.load(f)
  if info['skipped_corrupt_images'] and not indexed_now:
    log.warning('%s: %d unreadable image(s) were skipped when it was indexed (listed in '
                '%s/index.json)', spec.dataset, info['skipped_corrupt_images'], directory)
  return directory, info


def _open_split(directory: str, storage: str, root: str, split: str):
  """A split of the index: (images, labels) memory-mapped, or row -> (encoded bytes, label)
  read from the packed blob (an archive's) or from `root` by file name."""
  where = functools.partial(os.path.join, directory)
  labels = np.load(where(f'{split}.labels.npy'))
  if storage == 'arrays':
    return np.load(where(f'{split}.images.npy'), mmap_mode='r'), labels
  if storage == 'blob':
    with open(where(f'{split}.blob'), 'rb') as f:
      blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    offsets = np.load(where(f'{split}.offsets.npy'))
    return lambda row: (blob[offsets[row]:offsets[row + 1]], int(labels[row]))
  with open(where(f'{split}.files.json'), encoding='utf-8') as f:
    names = json.load(f)

  def read(row: int) -> tuple[bytes, int]:
    path = os.path.join(root, names[row])
    try:
      with open(path, 'rb') as f:
        return f.read(), int(labels[row])
    except OSError as e:
      raise ConfigError(f'cannot read {path} ({e.strerror or e}), which was there when the '
                        f'folder was indexed; restore it, or delete {directory} to '
                        'index the folder again') from None

  return read


def open_folder(spec: spec_lib.DataSpec) -> sources.Dataset:
  """Opens a folder dataset (indexing it on first use)."""
  directory, info = _index(spec)
  splits = info['splits']
  kind = sources.ArraySource if info['storage'] == 'arrays' else sources.EncodedSource
  open_split = functools.partial(_open_split, directory, info['storage'], info['source'])
  return sources.make_dataset(
      spec, sizes={name: s['num_examples'] for name, s in splits.items()},
      native_hw=tuple(info['image_hw']) if info['image_hw'] else (None, None),
      classes=info['class_names'], source=lambda pieces: kind(pieces, open_split),
      statistics=lambda split: (tuple(splits[split]['mean']), tuple(splits[split]['std'])))

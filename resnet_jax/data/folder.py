"""'folder:PATH' datasets: a local image tree or archive, prepared once with tfds.

PATH is a directory or a .tar/.tar.gz/.tgz archive laid out `split/class/image`
(optionally under one common top folder). The first use scans it (every image
is decoded once, so a corrupt file is found here and never inside tf.data),
then writes a regular tfds dataset to
`DATA_DIR/folder_<name>_<fingerprint>/1.0.0`; later runs find it and read it
like any other tfds dataset. The fingerprint covers the archive's size and
mtime (a directory's file names and class-folder mtimes), so editing the source
prepares a new copy and different sources never collide.

Archives are read as a stream (no extraction); when the images total under
1 GiB the bytes of the scan are kept and reused for writing, so the archive is
read once. JPEGs and RGB/greyscale PNGs are stored as they are (no re-encoding
loss); other formats and colour modes (CMYK, palette, alpha, 16-bit) are
converted to RGB once here.
"""

import bz2
import collections
import dataclasses
import fcntl
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import tarfile
import time
import warnings
import zlib
from concurrent import futures
from typing import Iterator

from resnet_jax.errors import ConfigError

IMAGE_EXTENSIONS = frozenset(
    {'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'})
ARCHIVE_SUFFIXES = ('.tar.gz', '.tar.bz2', '.tar.xz', '.tgz', '.tar')
VERSION = '1.0.0'
# Bump when the prepared format changes, so old copies are not reused.
_FORMAT = 1
_KEEP_IN_MEMORY_BYTES = 1 << 30
_CHUNK = 256
_WARN_INDIVIDUALLY = 20
_MAX_RECORDED_CORRUPT = 1000

# Completed builds in this process (tests check that a second call reuses).
build_count = 0
# Builders opened in this process, by prepared directory (the name holds the
# source's fingerprint, so an edited source still gets a new one).
_READY = {}

log = logging.getLogger(__name__)


class CorruptImageWarning(UserWarning):
  """An image of a folder dataset could not be decoded and was skipped."""


@dataclasses.dataclass
class _Image:
  key: str  # split/class/file, relative to the dataset root
  member: str  # path inside the archive or below the directory
  split: str
  label: str
  reencode: bool
  data: bytes | None


@dataclasses.dataclass
class _Plan:
  """The result of the scan: what the builder writes."""
  source: str
  name: str
  images: list[_Image]
  splits: list[str]
  class_names: list[str]
  image_shape: tuple[int | None, int | None, int]
  encoding: str | None  # 'jpeg' when every stored image is a JPEG
  corrupt: list[str]
  bytes_kept: bool


def parse(dataset: str) -> str:
  """The absolute source path of 'folder:PATH'; ConfigError if missing."""
  path = os.path.abspath(os.path.expanduser(dataset.split(':', 1)[1]))
  if not os.path.exists(path):
    raise ConfigError(
        f'dataset {dataset!r}: {path} does not exist; folder datasets are a '
        'directory or a .tar/.tar.gz archive laid out split/class/image')
  if not os.path.isdir(path) and not path.endswith(ARCHIVE_SUFFIXES):
    raise ConfigError(
        f'dataset {dataset!r}: {path} is neither a directory nor an archive '
        f'({", ".join(ARCHIVE_SUFFIXES)})')
  return path


def dataset_name(path: str) -> str:
  """'folder_<slug>_<fingerprint>': the tfds name of the prepared copy."""
  base = os.path.basename(path.rstrip('/'))
  for suffix in ARCHIVE_SUFFIXES:
    if base.endswith(suffix):
      base = base[:-len(suffix)]
      break
  slug = re.sub(r'[^a-z0-9]+', '_', base.lower()).strip('_')[:40] or 'data'
  return f'folder_{slug}_{_fingerprint(path)}'


def _fingerprint(path: str) -> str:
  h = hashlib.sha256(f'format={_FORMAT}'.encode())
  if os.path.isdir(path):
    # File names and class-folder mtimes: catches added, removed and renamed
    # images without reading (or stat-ing) a million files on every start.
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
  if any(p.startswith('.') and p not in ('.', '..') or p == '__MACOSX'
         for p in parts):
    return False
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _iter_source(path: str, wanted: set[str] | None = None,
                 ) -> Iterator[tuple[str, bytes | Exception]]:
  """(member path, bytes or the read error) for every image file, in order."""
  if os.path.isdir(path):
    for root, dirs, files in os.walk(path):
      dirs.sort()
      for f in sorted(files):
        member = os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
        if not _is_image_name(member) or (wanted is not None and member not in wanted):
          continue
        try:
          with open(os.path.join(root, f), 'rb') as fobj:
            yield member, fobj.read()
        except OSError as e:
          yield member, e
  else:
    yield from _iter_archive(path, wanted)


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


def _iter_archive(path: str, wanted: set[str] | None):
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
          if not info.isfile() or not _is_image_name(member):
            continue
          if wanted is not None and member not in wanted:
            continue
          yield member, tar.extractfile(info).read()
        end_of_archive = tar.offset
      # tarfile ends quietly at a missing or partial header; only the
      # end-of-archive block (512 zero bytes) means the stream was whole. The
      # drain reads the rest, so a compressed stream checks its trailer.
      while stream.read(1 << 20):
        pass
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise damaged(f'{type(e).__name__}: {e}') from None
  if stream.count < end_of_archive + tarfile.BLOCKSIZE:
    raise damaged(f'it ends at byte {stream.count:,} of its tar stream, before '
                  'the end-of-archive block')


def _inspect(data: bytes | Exception) -> tuple[str, str, tuple[int, int]]:
  """(format, mode, (h, w)) of an encoded image; raises if it does not decode."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(data, Exception):
    raise data
  with Image.open(io.BytesIO(data)) as im:
    im.load()  # A full decode: truncated files fail here.
    return im.format, im.mode, (im.height, im.width)


def _stored_as_is(fmt: str, mode: str) -> bool:
  return fmt in ('JPEG', 'PNG') and mode in ('RGB', 'L')


def _reencode(data: bytes, encoding: str | None) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as im:
    rgb = im.convert('RGB')
  out = io.BytesIO()
  if encoding == 'jpeg':
    rgb.save(out, format='JPEG', quality=95)
  else:
    rgb.save(out, format='PNG')
  return out.getvalue()


def _chunks(it, n):
  chunk = []
  for x in it:
    chunk.append(x)
    if len(chunk) == n:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def report_corrupt(source: str, member: str, error: Exception, count: int,
                   on_corrupt: str) -> None:
  """Warns about (or, with on_corrupt='error', refuses) an unreadable image."""
  where = f'{source}/{member}' if os.path.isdir(source) else f'{source}:{member}'
  if on_corrupt == 'error':
    raise ConfigError(
        f'unreadable image {where} ({type(error).__name__}: {error}); remove or '
        'replace it, or set --config.on_corrupt_image=skip to leave it out')
  if count <= _WARN_INDIVIDUALLY:
    warnings.warn(f'skipping unreadable image {where} '
                  f'({type(error).__name__}: {error})', CorruptImageWarning,
                  stacklevel=2)
  log.warning('skipping unreadable image %s: %s', where, error)


def member_parts(path: str, member: str, prefix: list[str] | None,
                 ) -> tuple[list[str], str, str]:
  """(top-folder prefix, split, class) of an image at `member`, checking the layout.

  Every image must sit at [top/]split/class/file, all under the same top folder.
  The split name is checked by `check_split_name` (only for readable images).

  Raises:
    ConfigError: the image is not laid out like the others.
  """
  parts = member.split('/')
  if len(parts) < 3 or (prefix is not None and parts[:-3] != prefix):
    raise ConfigError(
        f'{path}: {member!r} is not laid out like the other images; '
        'expected split/class/image (all under the same top folder), '
        "e.g. 'train/cat/0001.jpg'")
  return parts[:-3], parts[-3], parts[-2]


def check_split_name(path: str, split: str) -> None:
  if not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*', split):
    raise ConfigError(f'{path}: split folder {split!r} must be a name like '
                      "'train', 'test' or 'validation' (letters, digits, _)")


def _scan(path: str, name: str, on_corrupt: str) -> _Plan:
  """Decodes every image once: layout, classes, shapes, formats, corrupt files."""
  images, corrupt, formats, shapes = [], [], set(), set()
  prefix = None
  total = 0
  keep = True

  def collect(chunk, results):
    nonlocal prefix, total, keep
    for (member, data), (info, error) in zip(chunk, results):
      prefix, split, label = member_parts(path, member, prefix)
      if error is not None:
        corrupt.append(member)
        report_corrupt(path, member, error, len(corrupt), on_corrupt)
        continue
      check_split_name(path, split)
      fmt, mode, hw = info
      formats.add(fmt)
      shapes.add(hw)
      total += len(data)
      if keep and total > _KEEP_IN_MEMORY_BYTES:
        keep = False  # Too big to hold: the writer reads the source again.
        for im in images:
          im.data = None
      images.append(_Image(key=f'{split}/{label}/{member.split("/")[-1]}',
                           member=member, split=split,
                           label=label, reencode=not _stored_as_is(fmt, mode),
                           data=data if keep else None))

  # Decoding runs on a thread pool (PIL releases the GIL while decoding), a
  # chunk per task, overlapping the (sequential) reading of the source; a
  # bounded queue of chunks keeps memory flat for huge archives.
  workers = max(1, min(16, os.cpu_count() or 1))
  pending = collections.deque()
  with futures.ThreadPoolExecutor(workers) as pool:
    for chunk in _chunks(_iter_source(path), _CHUNK):
      pending.append((chunk, pool.submit(_inspect_chunk, [d for _, d in chunk])))
      while len(pending) > 2 * workers:
        collect(*_done(pending.popleft()))
    while pending:
      collect(*_done(pending.popleft()))
  if not images:
    raise ConfigError(
        f'{path} holds no readable images; expected split/class/image files '
        f'with extensions {sorted(IMAGE_EXTENSIONS)}')
  (h, w), = shapes if len(shapes) == 1 else ((None, None),)
  return _Plan(
      source=path, name=name, images=images,
      splits=sorted({im.split for im in images}),
      class_names=sorted({im.label for im in images}),
      image_shape=(h, w, 3),
      encoding='jpeg' if formats == {'JPEG'} else None,
      corrupt=corrupt, bytes_kept=keep)


def _done(item):
  chunk, future = item
  return chunk, future.result()


def _inspect_chunk(datas):
  return [_safe_inspect(d) for d in datas]


def _safe_inspect(data):
  try:
    return _inspect(data), None
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad data.
    return None, e


def _builder_class(name: str):
  """A tfds GeneratorBasedBuilder for one plan, named after the source."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the images of a scanned folder or archive."""
    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, plan: _Plan, **kwargs):
      self._plan = plan
      super().__init__(**kwargs)

    def _info(self):
      plan = self._plan
      return tfds.core.DatasetInfo(
          builder=self,
          description=f'Images of {plan.source} (split/class/image).',
          features=tfds.features.FeaturesDict({
              'image': tfds.features.Image(shape=plan.image_shape,
                                           encoding_format=plan.encoding),
              'label': tfds.features.ClassLabel(names=plan.class_names),
              'file_name': tfds.features.Text(),
          }),
          supervised_keys=('image', 'label'),
          metadata=tfds.core.MetadataDict(
              source=plan.source,
              skipped_corrupt_images=len(plan.corrupt),
              corrupt_images=plan.corrupt[:_MAX_RECORDED_CORRUPT]),
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return {split: self._generate_examples(split) for split in self._plan.splits}

    def _generate_examples(self, split):
      plan = self._plan
      todo = {im.member: im for im in plan.images if im.split == split}
      if plan.bytes_kept:
        stream = ((m, im.data) for m, im in todo.items())
      else:
        stream = _iter_source(plan.source, wanted=set(todo))
      for member, data in stream:
        im = todo[member]
        if im.reencode:
          data = _reencode(data, plan.encoding)
        yield im.key, {'image': data, 'label': im.label, 'file_name': im.key}

  return type(f'Folder_{name}', (FolderBuilder,),
              {'name': name, '__module__': __name__}, skip_registration=True)


def prepared_builder(dataset: str, data_dir: str, on_corrupt: str):
  """The tfds builder of a folder dataset, preparing it on first use.

  Args:
    dataset: 'folder:PATH'.
    data_dir: tfds data directory to hold the prepared copy.
    on_corrupt: 'skip' (warn with the path, count, leave out) or 'error'
      (ConfigError naming the path).

  Returns:
    A prepared, read-only `tfds.core.DatasetBuilder`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  global build_count
  path = parse(dataset)
  name = dataset_name(path)
  builder_dir = os.path.join(data_dir, name, VERSION)
  if builder_dir in _READY:  # Prepared and opened earlier in this process.
    return _READY[builder_dir]
  os.makedirs(data_dir, exist_ok=True)
  # Several processes (multi-host on one machine, parallel jobs) may start
  # together: one builds, the others wait and then read its result.
  with open(os.path.join(data_dir, f'.{name}.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(builder_dir, 'dataset_info.json')):
      start = time.time()
      log.info('preparing %s from %s (once)', builder_dir, path)
      plan = _scan(path, name, on_corrupt)
      scanned = time.time()
      builder = _builder_class(name)(plan=plan, data_dir=data_dir,
                                     file_format='tfrecord')
      builder.download_and_prepare(
          download_dir=os.path.join(data_dir, 'downloads'),
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
      build_count += 1
      log.warning(
          'prepared %s: %d images, %d classes, splits %s, %d unreadable images '
          'skipped, in %.1f s (scan and decode check %.1f s, writing %.1f s)',
          builder_dir, len(plan.images), len(plan.class_names), plan.splits,
          len(plan.corrupt), time.time() - start, scanned - start,
          time.time() - scanned)
  builder = tfds.builder_from_directory(builder_dir)
  _READY[builder_dir] = builder
  skipped = builder.info.metadata.get('skipped_corrupt_images', 0) if (
      builder.info.metadata) else 0
  if skipped:
    log.warning('%s: %d unreadable images were skipped when it was prepared '
                '(listed in %s/metadata.json)', dataset, skipped, builder_dir)
  return builder

"""'folder:PATH' datasets decoded with PIL into numpy arrays: no TensorFlow.

The tfds path (`folder.py`) writes a tfds copy of the images and reads it
back with TensorFlow. Where TensorFlow is not installed (a GPU machine with
jax alone), this module reads the same source with PIL instead, for the
on-device data path (`config.on_device_data`), which only needs arrays:

    meta = pil_folder.dataset_meta(config)
    arrays = pil_folder.load_split(config, meta.train_split, process_index=0,
                                   process_count=1, train=True)
    # {'image': uint8 [N, H, W, 3], 'label': int32 [N]}

It yields what the tfds path reads from its copy, in the same order (tested:
equal arrays), so a run does not depend on which reader fed it: the same
images are skipped as unreadable, labels index the sorted class names,
greyscale is replicated to RGB, and images that `folder.py` re-encodes (CMYK
JPEGs, palette/alpha PNGs, BMP, GIF, ...) are re-encoded the same way before
decoding. JPEGs decode with libjpeg's accurate integer IDCT (PIL's only
choice, TensorFlow's dct_method='INTEGER_ACCURATE'); tfds' default decode uses
TensorFlow's INTEGER_FAST, which differs by up to 5 levels (CIFAR-10 copy:
65 % of values, mean 0.99), so the tfds path decodes accurately as well.
Order: tfds writes each split sorted by the MD5 of
(split name, 'split/class/file'), cut into shards by its size rule, and reads
a split expression shard by shard through `tf.data` interleave (16 files at
a time, 16 examples per turn); `tfds_layout` reproduces that, and the index
ranges of `tfds.even_splits` /
`tfds.split_for_jax_process`.

The first use decodes every image once, in parallel processes, and caches
the arrays in `DATA_DIR/<folder.dataset_name>/arrays_v<N>/` (`.npy` per split
plus `info.json`, moved into place only when complete); the directory name
carries folder.py's fingerprint of the source, so an edited source decodes
again. Later runs map the arrays from disk.
"""

import collections
import concurrent.futures
import dataclasses
import fcntl
import io
import itertools
import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import time
from typing import Iterator

import numpy as np

from resnet_jax.errors import ConfigError
from resnet_jax.data import folder
from resnet_jax.data import meta as meta_lib
from resnet_jax.data import tfds_layout

READERS = ('auto', 'tfds', 'pil')
# Bump when the cached arrays or their order change, so old caches are not reused.
FORMAT = 1
_CHUNK = 256  # Images per decoding task.

# Completed decodes in this process (tests check that a second call reuses).
decode_count = 0
_OPENED = {}  # Cache directory -> Prepared, for this process.
_TFDS_IMPORTABLE = None

log = logging.getLogger(__name__)


# --- Which reader --------------------------------------------------------------

def _tfds_importable() -> bool:
  """Whether tensorflow and tensorflow_datasets import (once per process).

  Importing is the only reliable test (an installed but broken TensorFlow
  fails only then); where it succeeds the tfds path imports it next anyway.
  """
  global _TFDS_IMPORTABLE
  if _TFDS_IMPORTABLE is None:
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
      import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
      _TFDS_IMPORTABLE = True
    except ImportError as e:
      log.info('TensorFlow Datasets is not importable (%s): folder datasets '
               'are read with PIL', e)
      _TFDS_IMPORTABLE = False
  return _TFDS_IMPORTABLE


def use_pil(config) -> bool:
  """Whether config.dataset is read by this module rather than through tfds.

  `config.folder_reader`: 'pil' always, 'tfds' never, 'auto' exactly where
  TensorFlow (or tensorflow-datasets) does not import. Only folder datasets.
  """
  if config.folder_reader not in READERS:
    raise ConfigError(f'folder_reader={config.folder_reader!r} is not valid; '
                      f'choose one of {READERS}')
  if not config.dataset.startswith(meta_lib.FOLDER_PREFIX):
    return False
  if config.folder_reader == 'auto':
    return not _tfds_importable()
  return config.folder_reader == 'pil'


def data_dir(config) -> str:
  """config.data_dir, else tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  if config.data_dir:
    return os.path.abspath(os.path.expanduser(config.data_dir))
  return os.path.abspath(os.environ.get(
      'TFDS_DATA_DIR', os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')))


# --- Decoding ------------------------------------------------------------------

def _decode(data):
  """One image: (inspect, rgb array, re-encoded JPEG or None, stored size), or the error.

  `inspect` is folder.py's (format, mode, (h, w)); what fails to open or
  load there is unreadable here too. Images folder.py stores as they are
  decode to RGB (greyscale replicated, as TensorFlow's channels=3 does); the
  others are converted as folder.py converts them: to PNG (lossless: the RGB
  array is the stored image) unless every image of the dataset is a JPEG,
  in which case to JPEG, whose bytes are kept for the caller to decode.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(data, Exception):
    return None, data
  try:
    im = Image.open(io.BytesIO(data))
    im.load()  # A full decode: truncated files fail here, as in folder.py.
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad data.
    return None, e
  with im:
    info = (im.format, im.mode, (im.height, im.width))
    rgb = np.asarray(im if im.mode == 'RGB' else im.convert('RGB'))
    jpeg, size = None, len(data)
    if not folder._stored_as_is(im.format, im.mode):  # pylint: disable=protected-access
      size = len(folder._reencode(data, None))  # pylint: disable=protected-access
      if im.format == 'JPEG':
        jpeg = folder._reencode(data, 'jpeg')  # pylint: disable=protected-access
  return (info, rgb, jpeg, size), None


def _decode_chunk(datas):
  return [_decode(d) for d in datas]


def _decode_jpeg(data: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert('RGB'))


def _chunks(it, n):
  chunk = []
  for x in it:
    chunk.append(x)
    if len(chunk) == n:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _workers() -> int:
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cores = os.cpu_count() or 1
  return max(1, min(32, cores))


def _send(stream, obj) -> None:
  payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(struct.pack('<Q', len(payload)))
  stream.write(payload)
  stream.flush()


def _receive(stream):
  header = stream.read(8)
  if len(header) < 8:
    return EOFError
  (size,) = struct.unpack('<Q', header)
  return pickle.loads(stream.read(size))


def serve(inp, out) -> None:
  """A decoding worker's loop: chunks of encoded images in, `_decode` results out."""
  while (chunk := _receive(inp)) is not EOFError:
    results, images = [], []
    for result, error in _decode_chunk(chunk):
      if error is not None:
        try:
          pickle.dumps(error)
        except Exception:  # pylint: disable=broad-except
          error = OSError(f'{type(error).__name__}: {error}')
      else:
        images.append(result[1])
        result = (result[0], None, *result[2:])
      results.append((result, error))
    # One array per chunk pickles far faster than hundreds of small ones.
    if images and len({im.shape for im in images}) == 1:
      images = np.stack(images)
    _send(out, (results, images))


# The worker's command: its stdout becomes stderr (so that a library printing
# at import cannot corrupt the stream), the results go to the original fd 1.
# resnet_jax.data's __init__ imports jax (~2 s of CPU per worker); the worker
# needs only this module, folder.py and meta.py, so it registers the package
# without running its __init__.
_WORKER_CODE = (
    'import os, sys, types; out = os.fdopen(os.dup(1), "wb"); os.dup2(2, 1); '
    'import resnet_jax; package = types.ModuleType("resnet_jax.data"); '
    'package.__path__ = [os.path.join(resnet_jax.__path__[0], "data")]; '
    'sys.modules["resnet_jax.data"] = package; '
    'from resnet_jax.data import pil_folder; pil_folder.serve(sys.stdin.buffer, out)')


class _Worker:
  """One decoding process, called synchronously by one thread at a time."""

  def __init__(self):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    self.process = subprocess.Popen([sys.executable, '-c', _WORKER_CODE], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)

  def __call__(self, chunk):
    _send(self.process.stdin, chunk)
    received = _receive(self.process.stdout)
    if received is EOFError:
      raise RuntimeError(f'an image-decoding worker process exited with status '
                         f'{self.process.wait()} (see its messages above)')
    results, images = received
    images = iter(images)
    return [(r if e is not None else (r[0], next(images), *r[2:]), e)
            for r, e in results]

  def close(self, kill: bool = False) -> None:
    if kill:
      self.process.kill()
    else:
      self.process.stdin.close()
    try:
      self.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()


def _decoded(path: str, workers: int) -> Iterator[tuple[str, tuple]]:
  """(member, _decode result) for every image of the source, in source order.

  One chunk of images per task, decoded in `workers` processes while this one
  reads the (sequential) source; a bounded number of chunks in flight keeps
  memory flat. Processes, not threads: decoding small images is mostly Python
  work under the GIL. They are plain subprocesses of this interpreter (not
  multiprocessing's: spawn would re-run an unguarded __main__ script in
  every worker, fork is unsafe once JAX runs its threads), started only once
  a second chunk exists, so small datasets never pay for them.
  """
  # folder.py reads the source; a damaged archive is a ConfigError naming it.
  chunks = _chunks(folder._iter_source(path), _CHUNK)  # pylint: disable=protected-access
  head = [c for c in (next(chunks, None), next(chunks, None)) if c is not None]
  if len(head) < 2 or workers <= 1:
    for chunk in itertools.chain(head, chunks):
      yield from zip((m for m, _ in chunk), _decode_chunk([d for _, d in chunk]))
    return
  local = threading.local()  # Each thread of the pool drives its own process.
  started = []

  def decode(datas):
    if not hasattr(local, 'worker'):
      local.worker = _Worker()
      started.append(local.worker)
    return local.worker(datas)

  pending = collections.deque()
  failed = True
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    try:
      for chunk in itertools.chain(head, chunks):
        pending.append(([m for m, _ in chunk], pool.submit(decode, [d for _, d in chunk])))
        while len(pending) > 2 * workers:
          members, future = pending.popleft()
          yield from zip(members, future.result())
      while pending:
        members, future = pending.popleft()
        yield from zip(members, future.result())
      failed = False
    finally:
      for f in pending:
        f[1].cancel()
      pool.shutdown(wait=True)
      for worker in started:
        worker.close(kill=failed)


@dataclasses.dataclass
class _Split:
  keys: list = dataclasses.field(default_factory=list)
  labels: list = dataclasses.field(default_factory=list)  # Class names.
  images: list = dataclasses.field(default_factory=list)
  sizes: list = dataclasses.field(default_factory=list)  # Stored image bytes.
  jpegs: dict = dataclasses.field(default_factory=dict)  # Position -> re-encoded JPEG.


def _scan(path: str, on_corrupt: str, workers: int):
  """Decodes every image once; the layout rules and errors are folder.py's."""
  splits, corrupt, formats, shapes = {}, [], set(), set()
  prefix = None
  for member, (result, error) in _decoded(path, workers):
    prefix, split, label = folder.member_parts(path, member, prefix)
    if error is not None:
      corrupt.append(member)
      folder.report_corrupt(path, member, error, len(corrupt), on_corrupt)
      continue
    folder.check_split_name(path, split)
    (fmt, _, hw), rgb, jpeg, size = result
    formats.add(fmt)
    shapes.add(hw)
    s = splits.setdefault(split, _Split())
    if jpeg is not None:
      s.jpegs[len(s.keys)] = jpeg
    s.keys.append(f'{split}/{label}/{member.split("/")[-1]}')
    s.labels.append(label)
    # Arrays of one shape only: varying sizes cannot feed on-device data.
    s.images.append(rgb if len(shapes) == 1 else None)
    s.sizes.append(size)
  if not splits:
    raise ConfigError(
        f'{path} holds no readable images; expected split/class/image files '
        f'with extensions {sorted(folder.IMAGE_EXTENSIONS)}')
  if formats == {'JPEG'}:
    # folder.py stores these as JPEG (quality 95) when every image is a JPEG.
    for s in splits.values():
      for i, jpeg in s.jpegs.items():
        s.images[i] = _decode_jpeg(jpeg) if len(shapes) == 1 else None
        s.sizes[i] = len(jpeg)
  return splits, corrupt, (shapes.pop() if len(shapes) == 1 else None)


def _write_cache(directory: str, path: str, splits: dict, corrupt: list,
                 hw, seconds: float) -> None:
  """Writes arrays and info.json to a temporary directory, then renames it."""
  class_names = sorted({l for s in splits.values() for l in s.labels})
  index = {name: i for i, name in enumerate(class_names)}
  info = {'format': FORMAT, 'source': path, 'class_names': class_names,
          'image_hw': list(hw) if hw else None, 'splits': {},
          'skipped_corrupt_images': len(corrupt), 'corrupt_images': corrupt[:1000],
          'decode_seconds': round(seconds, 3)}
  tmp = f'{directory}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for name in sorted(splits):
    s = splits[name]
    labels = np.array([index[l] for l in s.labels], np.int32)
    order = tfds_layout.storage_order(name, s.keys)
    total = sum(tfds_layout.record_size(size, int(label), key)
                for size, label, key in zip(s.sizes, labels, s.keys))
    info['splits'][name] = {
        'num_examples': len(s.keys), 'num_bytes': total,
        'shard_lengths': tfds_layout.shard_lengths_for(
            len(s.keys), tfds_layout.num_shards(total, len(s.keys)))}
    np.save(os.path.join(tmp, f'{name}-labels.npy'), labels[order])
    if hw is not None:
      images = np.stack([s.images[i] for i in order])
      np.save(os.path.join(tmp, f'{name}-images.npy'), images)
    s.images = None  # Free the decoded copies split by split.
  with open(os.path.join(tmp, 'info.json'), 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=1)
  os.rename(tmp, directory)


@dataclasses.dataclass
class Prepared:
  """A decoded folder dataset in the cache.

  Attributes:
    directory: where its arrays are.
    class_names: label i is class_names[i] (sorted folder names).
    sizes: examples per split, in tfds' split order.
    shard_lengths: examples per tfds shard of each split.
    image_hw: (H, W) of every image, or (None, None) where they vary.
    skipped: unreadable images left out when it was decoded.
  """
  directory: str
  class_names: list[str]
  sizes: dict[str, int]
  shard_lengths: dict[str, list[int]]
  image_hw: tuple[int | None, int | None]
  skipped: int

  def pieces(self, spec: str, *, index: int = 0, count: int = 1,
             drop_remainder: bool = False) -> list[tfds_layout.Piece]:
    """`spec`'s pieces for process `index` of `count` (ValueError where tfds refuses)."""
    return tfds_layout.process_pieces(
        tfds_layout.parse_split(spec, self.sizes, self.shard_lengths),
        index=index, count=count, drop_remainder=drop_remainder)

  def num_examples(self, spec: str) -> int:
    return sum(len(p) for p in self.pieces(spec))

  def arrays(self, split: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(images or None, labels) of a whole split in stored order, memory-mapped."""
    images = os.path.join(self.directory, f'{split}-images.npy')
    labels = np.load(os.path.join(self.directory, f'{split}-labels.npy'))
    return (np.load(images, mmap_mode='r') if os.path.exists(images) else None), labels


def prepare(config) -> Prepared:
  """Decodes config.dataset into the cache on first use; later calls read it.

  Raises:
    ConfigError: a missing or damaged source, a bad layout, or (with
      on_corrupt_image='error') an unreadable image; the message names it.
  """
  global decode_count
  path = folder.parse(config.dataset)
  root = data_dir(config)
  name = folder.dataset_name(path)
  directory = os.path.join(root, name, f'arrays_v{FORMAT}')
  if directory not in _OPENED:
    os.makedirs(root, exist_ok=True)
    # Several processes may start together: one decodes, the others wait.
    with open(os.path.join(root, f'.{name}.arrays.lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not os.path.exists(os.path.join(directory, 'info.json')):
        start = time.time()
        log.info('decoding %s into %s (once)', path, directory)
        splits, corrupt, hw = _scan(path, config.on_corrupt_image, _workers())
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        _write_cache(directory, path, splits, corrupt, hw, time.time() - start)
        decode_count += 1
        log.warning('decoded %s: %d images, %d unreadable skipped, in %.1f s; '
                    'arrays in %s', path, sum(len(s.keys) for s in splits.values()),
                    len(corrupt), time.time() - start, directory)
    with open(os.path.join(directory, 'info.json'), encoding='utf-8') as f:
      info = json.load(f)
    hw = tuple(info['image_hw']) if info['image_hw'] else (None, None)
    _OPENED[directory] = Prepared(
        directory=directory, class_names=info['class_names'],
        sizes={s: v['num_examples'] for s, v in info['splits'].items()},
        shard_lengths={s: v['shard_lengths'] for s, v in info['splits'].items()},
        image_hw=hw, skipped=info['skipped_corrupt_images'])
    if info['skipped_corrupt_images']:
      log.warning('%s: %d unreadable images were skipped when it was decoded '
                  '(listed in %s/info.json)', config.dataset,
                  info['skipped_corrupt_images'], directory)
  return _OPENED[directory]


# --- What the rest of resnet_jax.data calls ------------------------------------

def _check_on_device(config) -> None:
  if not config.on_device_data:
    why = ' (TensorFlow does not import here)' if config.folder_reader == 'auto' else ''
    raise ConfigError(
        f'{config.dataset!r} is read with PIL{why}, which feeds on-device data only: '
        'add --config.on_device_data=True (CIFAR-sized data), or install '
        'tensorflow-datasets for the tf.data pipeline (--config.folder_reader=tfds)')


def _splits(config, prepared: Prepared) -> tuple[str, str]:
  """(train_split, eval_split), with the tfds path's defaults and checks."""
  return meta_lib.default_splits(config, list(prepared.sizes), prepared.num_examples)


def dataset_meta(config) -> meta_lib.DatasetMeta:
  """DatasetMeta of a folder dataset read with PIL (decoding it on first use).

  The same values as the tfds path's `sources.dataset_meta`.
  """
  _check_on_device(config)
  prepared = prepare(config)
  train, eval_ = _splits(config, prepared)
  size = meta_lib.output_size(config, prepared.image_hw)
  meta_lib.check_native_size(config, prepared.image_hw, 'on_device_data=True')
  return meta_lib.DatasetMeta(
      num_classes=meta_lib.num_classes(config, len(prepared.class_names)),
      image_shape=(size, size, 3),
      num_train=prepared.num_examples(train), num_eval=prepared.num_examples(eval_),
      train_split=train, eval_split=eval_, name=config.dataset)


def load_split(config, split: str, *, process_index: int = 0, process_count: int = 1,
               train: bool) -> dict[str, np.ndarray]:
  """This process's examples of a split expression, in the tfds path's order.

  Args:
    config: the config (dataset, data_dir, on_corrupt_image).
    split: a split expression ('train[:45000]', 'test', ...).
    process_index: this process.
    process_count: processes sharing the split.
    train: True: `tfds.split_for_jax_process(split, drop_remainder=True)`'s
      share; False: `tfds.even_splits(split, n=process_count)[process_index]`.

  Returns:
    {'image': uint8 [N, H, W, 3], 'label': int32 [N]}.
  """
  prepared = prepare(config)
  try:
    pieces = prepared.pieces(split, index=process_index, count=process_count,
                             drop_remainder=train)
  except (KeyError, ValueError, IndexError) as e:
    raise ConfigError(f'split {split!r} of {config.dataset!r}: {e}') from e
  if prepared.image_hw == (None, None):
    raise ConfigError(f'the images of {config.dataset!r} vary in size: they '
                      'cannot be kept as arrays (on_device_data=True)')
  h, w = prepared.image_hw
  images, labels = [], []
  for run in tfds_layout.read_order(pieces, prepared.shard_lengths):
    split_images, split_labels = prepared.arrays(run.split)
    images.append(split_images[run.start:run.end])
    labels.append(split_labels[run.start:run.end])
  if not images:
    return {'image': np.zeros((0, h, w, 3), np.uint8), 'label': np.zeros((0,), np.int32)}
  return {'image': np.concatenate(images), 'label': np.concatenate(labels)}

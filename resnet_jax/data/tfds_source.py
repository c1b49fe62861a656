"""Registered tfds datasets ('cifar10', 'imagenet2012', ...): find, prepare, read.

Reading needs no TensorFlow: array_record files are read with tfds' data source,
images as encoded bytes that the loader's workers decode with PIL. Preparing
needs TensorFlow (`pip install -e '.[tfds]'`): from `manual_dir` when the archives
are there, else downloaded only with `download` and after a short probe of the
hosts, so that offline fails within seconds with the ways out (tfds would retry
for minutes).
"""

import concurrent.futures
import contextlib
import functools
import glob
import logging
import os
import shutil
import socket
import sys
import urllib.parse

from resnet_jax.data import sources
from resnet_jax.data import spec as spec_lib
from resnet_jax.errors import ConfigError

PROBE_TIMEOUT_S = 3.0
FILE_FORMAT = 'array_record'
log = logging.getLogger(__name__)


def _ways_out(name: str, files: list[str]) -> str:
  """'Options: (1) ...; (2) ...; (3) ...' on one line (errors are one line)."""
  options = [
      f'offline preparation: put {", ".join(files) or "the files tfds downloads"} '
      '(obtained by hand) into a directory and pass --config.manual_dir=DIR; tfds verifies '
      'the checksums',
      'use a local copy as an image folder: --config.dataset=folder:PATH (a directory or '
      '.tar/.tar.gz laid out split/class/image)',
      f'point --config.data_dir at a directory where {name!r} is already prepared (e.g. '
      'copied from a machine with network access)']
  return 'Options: ' + '; '.join(f'({i}) {o}' for i, o in enumerate(options, 1))


def _reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:443 opens within `timeout` seconds."""
  # getaddrinfo has no timeout of its own (a dead resolver can block for tens
  # of seconds): it runs in a thread we stop waiting for.
  pool = concurrent.futures.ThreadPoolExecutor(1)
  try:
    family, kind, proto, _, addr = pool.submit(
        socket.getaddrinfo, host, 443, type=socket.SOCK_STREAM).result(timeout=timeout)[0]
    with socket.socket(family, kind, proto) as sock:
      sock.settimeout(timeout)
      sock.connect(addr)
    return True
  except (OSError, concurrent.futures.TimeoutError):
    return False
  finally:
    pool.shutdown(wait=False)


def _prepare(spec: spec_lib.DataSpec, builder) -> None:
  """Prepares an unprepared registered builder, or explains what to do."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, urls = spec.dataset, dict(builder.url_infos or {})
  files = sorted({i.filename or os.path.basename(urllib.parse.urlparse(u).path)
                  for u, i in urls.items()})
  present = [f for f in files if spec.manual_dir and
             os.path.exists(os.path.join(spec.manual_dir, f))]
  missing = [f for f in files if f not in present]
  where = f'{name!r} is not prepared in {spec.data_dir}'
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  offline = bool(present) if instructions else bool(files) and not missing
  if instructions and not present:
    # These builders (imagenet2012, ...) read manual_dir themselves.
    raise ConfigError(
        f'{where}, and it can only be prepared from files obtained by hand: put '
        f'{", ".join(files) or "them"} into a directory and pass --config.manual_dir=DIR '
        f'(tfds: "{" ".join(instructions.split())}"); or use a local copy as an image '
        'folder: --config.dataset=folder:PATH')
  if not offline:
    if not spec.download:
      raise ConfigError(f'{where} and --config.download=False. {_ways_out(name, missing)}; '
                        '(4) allow the download: --config.download=True')
    hosts = sorted({urllib.parse.urlparse(u).hostname for u in urls or [
        builder.info.homepage]} - {None, ''})
    unreachable = [h for h in hosts if not _reachable(h)]
    if unreachable or not hosts:
      raise ConfigError(f'{where}, and its download host {", ".join(unreachable) or "(unknown)"}'
                        f' is not reachable within {PROBE_TIMEOUT_S:g} s (no network?). '
                        + _ways_out(name, missing))
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError(f"{where}; preparing a tfds dataset needs TensorFlow (training does "
                      "not): pip install -e '.[tfds]'; or use a local copy as an image "
                      'folder: --config.dataset=folder:PATH') from None
  # An interrupted preparation leaves tfds' incomplete.* directories; tfds
  # starts afresh anyway, so they are only disk space.
  for stale in glob.glob(os.path.join(spec.data_dir, name, 'incomplete.*')):
    shutil.rmtree(stale, ignore_errors=True)
  log.warning('preparing %s in %s (%s)', name, spec.data_dir,
              f'from {spec.manual_dir}' if offline else 'downloading')
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  try:
    with contextlib.redirect_stdout(sys.stderr):  # tfds prints progress; stdout is for results.
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=spec.manual_dir or None, try_download_gcs=not offline))
  except download_manager.NonMatchingChecksumError as e:
    raise ConfigError(
        f'a file in {spec.manual_dir} does not match the checksum tfds expects for {name!r}: '
        f'obtain the original archive again ({" ".join(str(e).split())})') from e


def _builder(spec: spec_lib.DataSpec, *, prepare: bool):
  """The prepared builder of spec.dataset, in array_record format."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(spec.dataset, data_dir=spec.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(
        f"unknown dataset {spec.dataset!r}: not a tfds dataset name (e.g. 'cifar10', "
        "'cifar100', 'imagenet2012', 'imagenette'), nor 'folder:PATH' nor 'fake'") from e
  if not builder.is_prepared():
    if not prepare:
      raise ConfigError(
          f'{spec.dataset!r} is not prepared in {spec.data_dir}; reading never downloads. '
          f'{_ways_out(spec.dataset, [])}; (4) with network access, prepare it once: '
          'python -m resnet_jax.data --config=CONFIG [--config.data_dir=DIR]')
    builder = tfds.builder(spec.dataset, data_dir=spec.data_dir, file_format=FILE_FORMAT)
    _prepare(spec, builder)
  stored = getattr(builder.info, 'file_format', None) or FILE_FORMAT
  if str(getattr(stored, 'value', stored)) != FILE_FORMAT:
    raise ConfigError(
        f'{spec.dataset!r} in {builder.data_dir} is stored as {stored}; random access needs '
        f'{FILE_FORMAT}: convert it once with `tfds convert_format --dataset_dir='
        f'{builder.data_dir} --out_file_format={FILE_FORMAT}`, or prepare it again in '
        'another --config.data_dir')
  return builder


def _open_split(builder_dir: str, split: str):
  """row -> (encoded image, label) of a prepared split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rows = tfds.builder_from_directory(builder_dir).as_data_source(
      split=split, decoders={'image': tfds.decode.SkipDecoding()})

  def read(row: int):
    example = rows[row]
    return example['image'], int(example['label'])

  return read


def open_tfds(spec: spec_lib.DataSpec, *, prepare: bool) -> sources.Dataset:
  """Opens a registered tfds dataset (preparing it first when `prepare`)."""
  builder = _builder(spec, prepare=prepare)
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ConfigError(f'{spec.dataset} has no image/label features (has '
                      f'{list(features.keys())}); only image classification works here')
  open_split = functools.partial(_open_split, str(builder.data_dir))
  return sources.make_dataset(
      spec, sizes={name: split.num_examples for name, split in builder.info.splits.items()},
      native_hw=tuple(features['image'].shape)[:2], classes=features['label'].names,
      statistics=lambda _: spec_lib.STATISTICS.get(spec.dataset),
      source=lambda pieces: sources.EncodedSource(pieces, open_split))

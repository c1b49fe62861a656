"""Registered tfds datasets ('cifar10', 'imagenet2012', ...): find, prepare, read.

Reading needs no TensorFlow: a prepared dataset in tfds' `array_record`
format is read with `tfds.data_source`, images as their encoded bytes
(decoded by the loader's workers with PIL, as every other source). Preparing
one (tfds' `download_and_prepare`) is the only step that needs TensorFlow:
`pip install -e '.[tfds]'`.

Offline, tfds retries a download for minutes before failing; here a dataset
that is not prepared is prepared from `manual_dir` when the archives it needs
are there, and downloaded only with `download` and after a probe of its
download hosts with a short timeout: no network fails within seconds, with the
ways out.
"""

import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import socket
import sys
import urllib.parse

from resnet_jax.data import sources
from resnet_jax.data import spec as spec_lib
from resnet_jax.errors import ConfigError

PROBE_TIMEOUT_S = 3.0
FILE_FORMAT = 'array_record'
log = logging.getLogger(__name__)


def _options(*options: str) -> str:
  """'Options: (1) a; (2) b' on one line (CLIs print errors as one line)."""
  return 'Options: ' + '; '.join(f'({i}) {o}' for i, o in enumerate(options, 1))


def _offline_options(name: str, missing: list[str]) -> list[str]:
  files = ', '.join(missing) if missing else 'the files tfds downloads'
  return [
      f'offline preparation: put {files} (obtained by hand) into a directory and '
      'pass --config.manual_dir=DIR; tfds verifies the checksums',
      'use a local copy as an image folder: --config.dataset=folder:PATH (a '
      'directory or .tar/.tar.gz laid out split/class/image)',
      f'point --config.data_dir at a directory where {name!r} is already prepared '
      '(e.g. copied from a machine with network access)']


def _required_files(builder) -> list[str]:
  infos = builder.url_infos or {}
  return sorted({info.filename or os.path.basename(urllib.parse.urlparse(url).path)
                 for url, info in infos.items()})


def _hosts(builder) -> list[str]:
  urls = list((builder.url_infos or {}).keys()) or (
      [builder.info.homepage] if builder.info.homepage else [])
  return sorted({urllib.parse.urlparse(u).hostname for u in urls} - {None})


def _reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:443 opens within `timeout` seconds."""
  # getaddrinfo has no timeout of its own (a dead resolver can block for tens
  # of seconds), so it runs in a thread we stop waiting for.
  pool = concurrent.futures.ThreadPoolExecutor(1)
  try:
    addrs = pool.submit(socket.getaddrinfo, host, 443, type=socket.SOCK_STREAM
                        ).result(timeout=timeout)
    family, kind, proto, _, addr = addrs[0]
    with socket.socket(family, kind, proto) as sock:
      sock.settimeout(timeout)
      sock.connect(addr)
    return True
  except (OSError, concurrent.futures.TimeoutError):
    return False
  finally:
    pool.shutdown(wait=False)


def _tensorflow_importable() -> bool:
  if importlib.util.find_spec('tensorflow') is None:
    return False
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def _prepare(spec: spec_lib.DataSpec, builder) -> None:
  """Prepares an unprepared registered builder, or explains what to do."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = spec.dataset
  needs_manual = bool(getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None))
  required = _required_files(builder)
  present = [f for f in required if spec.manual_dir and
             os.path.exists(os.path.join(spec.manual_dir, f))]
  missing = [f for f in required if f not in present]
  where = f'{name!r} is not prepared in {spec.data_dir}'
  if needs_manual:
    # These builders (imagenet2012, ...) read manual_dir themselves; their
    # checksum files list the archives, but any one split is enough.
    if not present:
      instructions = ' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
      raise ConfigError(
          f'{where}, and it can only be prepared from files obtained by hand: put '
          f'{", ".join(required) or "them"} into a directory and pass '
          f'--config.manual_dir=DIR (tfds: "{instructions}"); or use a local copy as '
          'an image folder: --config.dataset=folder:PATH')
    offline = True
  else:
    offline = bool(required) and not missing
    if not offline:
      if not spec.download:
        raise ConfigError(f'{where} and --config.download=False. ' + _options(
            *_offline_options(name, missing), 'allow the download: --config.download=True'))
      hosts = _hosts(builder)
      unreachable = [h for h in hosts if not _reachable(h)]
      if unreachable or not hosts:
        raise ConfigError(
            f'{where}, and its download host {", ".join(unreachable or hosts) or "(unknown)"} '
            f'is not reachable within {PROBE_TIMEOUT_S:g} s (no network?). '
            + _options(*_offline_options(name, missing)))
  if not _tensorflow_importable():
    raise ConfigError(
        f"{where}; preparing a tfds dataset needs TensorFlow (training does not): "
        "pip install -e '.[tfds]', or " + _offline_options(name, missing)[1])
  log.warning('preparing %s in %s (%s)', name, spec.data_dir,
              f'from {spec.manual_dir}' if offline else 'downloading')
  download_config = tfds.download.DownloadConfig(
      manual_dir=spec.manual_dir or None, try_download_gcs=not offline)
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  try:
    # tfds prints its progress to stdout; stdout is for results.
    with contextlib.redirect_stdout(sys.stderr):
      builder.download_and_prepare(download_config=download_config)
  except download_manager.NonMatchingChecksumError as e:
    raise ConfigError(
        f'a file in {spec.manual_dir} does not match the checksum tfds expects for '
        f'{name!r}: obtain the original archive again ({" ".join(str(e).split())})'
    ) from e


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
          + _options('prepare it once: python -m resnet_jax.data --config=CONFIG '
                     '[--config.data_dir=DIR]', *_offline_options(spec.dataset, [])))
    builder = tfds.builder(spec.dataset, data_dir=spec.data_dir, file_format=FILE_FORMAT)
    _prepare(spec, builder)
  stored = getattr(builder.info, 'file_format', None) or FILE_FORMAT
  stored = str(getattr(stored, 'value', stored))
  if stored != FILE_FORMAT:
    raise ConfigError(
        f'{spec.dataset!r} in {builder.data_dir} is stored as {stored}; random access '
        f'needs {FILE_FORMAT}: convert it once with `tfds convert_format '
        f'--dataset_dir={builder.data_dir} --out_file_format={FILE_FORMAT}`, or prepare '
        'it again in another --config.data_dir')
  return builder


class _Reader:
  """(encoded image, label) of a prepared split, opened lazily in each process."""

  def __init__(self, builder_dir: str):
    self._dir = builder_dir
    self._open = {}

  def __getstate__(self):
    return {'_dir': self._dir, '_open': {}}

  def __call__(self, split: str, row: int):
    if split not in self._open:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      builder = tfds.builder_from_directory(self._dir)
      self._open[split] = builder.as_data_source(
          split=split, decoders={'image': tfds.decode.SkipDecoding()})
    example = self._open[split][row]
    return example['image'], int(example['label'])


def open_tfds(spec: spec_lib.DataSpec, *, prepare: bool) -> sources.Dataset:
  """Opens a registered tfds dataset (preparing it first when `prepare`)."""
  builder = _builder(spec, prepare=prepare)
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ConfigError(f'{spec.dataset} has no image/label features (has '
                      f'{list(features.keys())}); only image classification works here')
  shape = tuple(features['image'].shape)
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  train, evaluation = sources.default_splits(spec, sizes)
  statistics = spec_lib.STATISTICS.get(spec.dataset)
  if statistics is None and not spec.mean:
    log.info("%s: normalising with ImageNet's mean and std (set --config.mean and "
             '--config.std for its own)', spec.dataset)
  meta = sources.make_meta(spec, sizes=sizes, train=train, evaluation=evaluation,
                           native_hw=shape[:2], classes=features['label'].names,
                           statistics=statistics)
  read = _Reader(str(builder.data_dir))
  return sources.Dataset(
      meta=meta, train=sources.EncodedSource(sources.parse_split(train, sizes), read),
      eval=sources.EncodedSource(sources.parse_split(evaluation, sizes), read),
      native_hw=shape[:2])

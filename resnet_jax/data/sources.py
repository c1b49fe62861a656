"""Finding prepared tfds datasets: registered builders, folders, offline checks.

Offline, `tfds.load` of an unprepared dataset retries its download for minutes
before failing. Everything here decides within seconds instead: a prepared
dataset is read; a folder dataset is prepared from local files; a registered
dataset is prepared from `config.manual_dir` when the files it needs are there;
only then, and only with `config.download`, is the network used, after a
probe of the download hosts with a short timeout.
"""

import concurrent.futures
import logging
import os
import socket
import urllib.parse

import numpy as np

from resnet_jax.errors import ConfigError
from resnet_jax.data import folder
from resnet_jax.data import meta as meta_lib

PROBE_TIMEOUT_S = 3.0
log = logging.getLogger(__name__)


def data_dir(config) -> str:
  """config.data_dir, else tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  if config.data_dir:
    return os.path.abspath(os.path.expanduser(config.data_dir))
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return os.path.expanduser(constants.get_default_data_dir())


def _options(*options: str) -> str:
  """'Options: (1) a; (2) b' on one line (CLIs print errors as one line)."""
  return 'Options: ' + '; '.join(f'({i}) {o}' for i, o in enumerate(options, 1))


def _offline_options(name: str, missing: list[str]) -> list[str]:
  files = ', '.join(missing) if missing else 'the files tfds downloads'
  return [
      f'offline preparation: put {files} (obtained by hand) into a directory '
      'and pass --config.manual_dir=DIR; tfds verifies the checksums',
      'use a local copy as an image folder: --config.dataset=folder:PATH (a '
      'directory or .tar/.tar.gz laid out split/class/image)',
      f'point --config.data_dir at a directory where {name!r} is already '
      'prepared (e.g. copied from a machine with network access)']


def _required_files(builder) -> list[str]:
  """File names the builder reads from manual_dir or downloads."""
  infos = builder.url_infos or {}
  return sorted({info.filename or os.path.basename(urllib.parse.urlparse(url).path)
                 for url, info in infos.items()})


def _hosts(builder) -> list[str]:
  urls = list((builder.url_infos or {}).keys())
  if not urls and builder.info.homepage:
    urls = [builder.info.homepage]
  return sorted({urllib.parse.urlparse(u).hostname for u in urls} - {None})


def _reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:443 opens within `timeout` seconds."""
  # getaddrinfo has no timeout of its own (a dead resolver can block for
  # tens of seconds), so it runs in a thread we stop waiting for.
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


def _registered_builder(config):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(config.dataset, data_dir=data_dir(config))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(
        f'unknown dataset {config.dataset!r}: not a tfds dataset name '
        "(e.g. 'cifar10', 'cifar100', 'imagenet2012', 'imagenette'), nor "
        "'folder:PATH' nor 'fake'") from e


def _prepare_registered(config, builder, *, allow_download: bool) -> None:
  """Prepares an unprepared registered builder, or explains what to do."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  name = config.dataset
  needs_manual = bool(getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None))
  required = _required_files(builder)
  manual_dir = (os.path.abspath(os.path.expanduser(config.manual_dir))
                if config.manual_dir else '')
  present = [f for f in required if manual_dir and
             os.path.exists(os.path.join(manual_dir, f))]
  missing = [f for f in required if f not in present]
  where = f'{name!r} is not prepared in {data_dir(config)}'

  if needs_manual:
    # These builders (imagenet2012, ...) read manual_dir themselves; their
    # checksum files list the archives, but any one split is enough.
    if not manual_dir or not present:
      instructions = ' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
      raise ConfigError(
          f'{where}, and it can only be prepared from files obtained by hand: '
          f'put {", ".join(required) or "them"} into a directory and pass '
          f'--config.manual_dir=DIR (tfds: "{instructions}"); or use a local '
          'copy as an image folder: --config.dataset=folder:PATH')
    offline = True
  else:
    offline = bool(required) and not missing
    if not offline:
      if not config.download:
        raise ConfigError(
            f'{where} and --config.download=False. ' + _options(
                *_offline_options(name, missing),
                'allow the download: --config.download=True'))
      if not allow_download:
        raise ConfigError(
            f'{where}; dataset_meta() and the input iterators never download. '
            + _options('with network access, prepare it once: '
                       'resnet_jax.data.prepare(config), or python -m '
                       'resnet_jax.data --config=CONFIG [--config.data_dir=DIR]',
                       *_offline_options(name, missing)))
      hosts = _hosts(builder)
      unreachable = [h for h in hosts if not _reachable(h)]
      if unreachable or not hosts:
        raise ConfigError(
            f'{where}, and its download host '
            f'{", ".join(unreachable or hosts) or "(unknown)"} is not reachable '
            f'within {PROBE_TIMEOUT_S:g} s (no network?). '
            + _options(*_offline_options(name, missing)))

  log.warning('preparing %s in %s (%s)', name, data_dir(config),
              f'from {manual_dir}' if offline else 'downloading')
  download_config = tfds.download.DownloadConfig(
      manual_dir=manual_dir or None,
      # Offline there is no GCS either: go straight to the local files.
      try_download_gcs=not offline)
  try:
    builder.download_and_prepare(download_config=download_config)
  except download_manager.NonMatchingChecksumError as e:
    raise ConfigError(
        f'a file in {manual_dir} does not match the checksum tfds expects for '
        f'{name!r}: obtain the original archive again ({" ".join(str(e).split())})'
    ) from e


def prepared_builder(config, *, allow_download: bool):
  """The prepared tfds builder for config.dataset (not 'fake').

  Args:
    config: the config (dataset, data_dir, manual_dir, download,
      on_corrupt_image).
    allow_download: whether the network may be used (after a reachability
      probe); False raises ConfigError at once when a download would be needed.

  Returns:
    A `tfds.core.DatasetBuilder` whose `is_prepared()` is True.

  Raises:
    ConfigError: unknown dataset, or not prepared and not preparable here;
      the message lists what to do.
  """
  if config.dataset.startswith(meta_lib.FOLDER_PREFIX):
    return folder.prepared_builder(config.dataset, data_dir(config),
                                   config.on_corrupt_image)
  builder = _registered_builder(config)
  if not builder.is_prepared():
    _prepare_registered(config, builder, allow_download=allow_download)
  return builder


def default_splits(config, builder) -> tuple[str, str]:
  """(train_split, eval_split) of a tfds builder (`meta.default_splits`)."""
  return meta_lib.default_splits(config, list(builder.info.splits.keys()),
                                 lambda split: builder.info.splits[split].num_examples)


def image_info(builder) -> tuple[tuple[int | None, int | None], int, str | None]:
  """((H, W) as stored or None where varying, num_classes, encoding)."""
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ConfigError(
        f'{builder.info.name} has no image/label features (has '
        f'{list(features.keys())}); only image-classification datasets work here')
  image = features['image']
  shape = tuple(image.shape)
  if len(shape) != 3:
    raise ConfigError(f'{builder.info.name}: images of shape {shape} are not H x W x C')
  return (shape[0], shape[1]), features['label'].num_classes, getattr(
      image, 'encoding_format', None)


def dataset_meta(config, builder) -> meta_lib.DatasetMeta:
  """DatasetMeta from the builder's info (sizes, classes, image shape)."""
  train, eval_ = default_splits(config, builder)
  native_hw, dataset_classes, _ = image_info(builder)
  size = meta_lib.output_size(config, native_hw)
  if config.on_device_data:
    meta_lib.check_native_size(config, native_hw, 'on_device_data=True')
  return meta_lib.DatasetMeta(
      num_classes=meta_lib.num_classes(config, dataset_classes),
      # Greyscale and RGBA images are converted to RGB on reading.
      image_shape=(size, size, 3),
      num_train=builder.info.splits[train].num_examples,
      num_eval=builder.info.splits[eval_].num_examples,
      train_split=train, eval_split=eval_, name=config.dataset)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def load_numpy(builder, split) -> dict:
  """All examples of a (sub)split as numpy arrays: {'image': uint8, 'label': int32}.

  Decoded as the tf.data path decodes (`tf_augment.decode`: JPEGs as PIL
  does), so these arrays equal the TensorFlow-free PIL reader's (pil_folder).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import tf_augment  # pylint: disable=g-import-not-at-top
  tf = _tf()
  h, w, _ = builder.info.features['image'].shape
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={'image': tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(try_autocache=False))
  ds = ds.map(lambda ex: (tf.ensure_shape(tf_augment.decode(ex['image']), (h, w, 3)), ex['label']),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  images, labels = [np.zeros((0, h, w, 3), np.uint8)], [np.zeros((0,), np.int64)]
  for image, label in ds.batch(8192).as_numpy_iterator():
    images.append(image)
    labels.append(label)
  return {'image': np.concatenate(images), 'label': np.concatenate(labels).astype(np.int32)}

"""Input pipelines: tfds datasets, local image folders, on-device and fake data.

Public API (see docs/CONTRACTS.md, "Data"):

    meta = data.prepare(config)                 # once: may download (config.download)
    meta = data.dataset_meta(config)            # never downloads
    train_iter = data.create_train_iter(config, meta, start_step=step)
    for batch in data.create_eval_iter(config, meta): ...
    x = data.device_preprocess(config, rng, batch['image'], train=True)  # in pmap

Batches are dicts of arrays already on the local devices, laid out
[local_devices, per_device_batch, ...] for `jax.pmap`: 'image' uint8 and
'label' int32, plus 'mask' (bool, False on padding) in evaluation batches.

Importing this package does not import TensorFlow; only the tf.data and tfds
paths do, when called. 'fake' data and `device_preprocess` never do.

Modules, one job each: `meta` (DatasetMeta, config checks), `devices`
(processes, devices, batch splits, transfer), `sources` (tfds builders,
offline checks), `folder` (folder:PATH datasets), `tf_augment` +
`tf_pipeline` (the tf.data host pipeline), `on_device` (data resident on the
devices), `preprocess` (in-step JAX preprocessing), `fake` (synthetic data);
`python -m resnet_jax.data --config=...` prepares a config's dataset.
"""

from typing import Iterator

from resnet_jax.errors import ConfigError
from resnet_jax.data import devices
from resnet_jax.data import fake
from resnet_jax.data import meta as _meta
from resnet_jax.data.meta import DatasetMeta
from resnet_jax.data.preprocess import device_preprocess

__all__ = [
    'DatasetMeta', 'dataset_meta', 'prepare', 'steps_per_epoch',
    'create_train_iter', 'create_eval_iter', 'device_preprocess',
]


def dataset_meta(config) -> DatasetMeta:
  """Describes config.dataset: classes, image shape, split sizes (global).

  Reads the prepared tfds dataset's info; never downloads. A 'folder:PATH'
  dataset is prepared here on first use, and a registered dataset whose
  archives are in `config.manual_dir` is prepared from them (both offline).

  Args:
    config: the experiment config (data section of configs/base.py).

  Returns:
    The dataset's DatasetMeta.

  Raises:
    ConfigError: invalid data settings, or a dataset that is not prepared and
      would need a download (the message says how to prepare it: `prepare`,
      manual_dir, folder:PATH or data_dir).
  """
  _meta.validate(config)
  if config.dataset == _meta.FAKE:
    return fake.dataset_meta(config)
  from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  builder = sources.prepared_builder(config, allow_download=False)
  return sources.dataset_meta(config, builder)


def prepare(config) -> DatasetMeta:
  """Prepares config.dataset, downloading it if needed and allowed.

  Like `dataset_meta`, and with `config.download` a registered dataset that is
  neither prepared nor in manual_dir is downloaded, after a reachability probe
  of its download host: offline this fails within seconds with instructions
  instead of tfds' minutes of retries. Call it once before training (on every
  process; concurrent folder preparations wait for each other).

  Returns:
    The dataset's DatasetMeta.
  """
  _meta.validate(config)
  if config.dataset != _meta.FAKE:
    from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
    sources.prepared_builder(config, allow_download=config.download)
  return dataset_meta(config)


def steps_per_epoch(config, meta: DatasetMeta) -> int:
  """Training steps per epoch: meta.num_train // config.batch_size (global)."""
  steps = meta.num_train // config.batch_size
  if steps < 1:
    raise ConfigError(
        f'batch_size={config.batch_size} is larger than the {meta.num_train} '
        f'training examples of {meta.name!r} ({meta.train_split})')
  return steps


def create_train_iter(config, meta: DatasetMeta, *,
                      start_step: int = 0) -> Iterator[dict]:
  """Endless training batches on the local devices, resumable at any step.

  Deterministic from config.seed: epoch e is shuffled (and augmented) by
  (seed, e), and a new epoch starts every `steps_per_epoch` steps. Starting
  at `start_step` yields exactly the batches an uninterrupted run yields from
  that step on.

  Args:
    config: the config (dataset, batch_size, augment, on_device_data, ...).
    meta: `dataset_meta(config)`.
    start_step: global step of the first batch (a restored checkpoint's step).

  Returns:
    An iterator of {'image': uint8 [D, B/D, H, W, C], 'label': int32 [D, B/D]}
    with D = jax.local_device_count() and B the per-process batch.
  """
  _meta.validate(config)
  devices.train_layout(config)  # Fail here on an indivisible batch size.
  steps_per_epoch(config, meta)
  if start_step < 0:
    raise ConfigError(f'start_step={start_step} must be >= 0')
  if config.dataset == _meta.FAKE:
    return fake.create_train_iter(config, meta, start_step=start_step)
  if config.on_device_data:
    from resnet_jax.data import on_device  # pylint: disable=g-import-not-at-top
    return on_device.create_train_iter(config, meta, start_step=start_step)
  from resnet_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return devices.prefetch_to_devices(
      tf_pipeline.train_batches(config, meta, start_step=start_step),
      config.prefetch_batches)


def create_eval_iter(config, meta: DatasetMeta) -> Iterator[dict]:
  """One pass over this process's shard of the eval split, padded and masked.

  Every eval example appears in exactly one batch of one process with
  mask=True; the last batches are padded with mask=False examples, and every
  process yields the same number of batches (so pmapped collectives never
  hang). `config.num_eval_batches > 0` stops after that many batches.

  Returns:
    A finite iterator of {'image': uint8 [D, b, H, W, C], 'label': int32 [D, b],
    'mask': bool [D, b]} on the local devices (b = per-device eval batch).
  """
  _meta.validate(config)
  devices.eval_layout(config)
  if config.dataset == _meta.FAKE:
    return fake.create_eval_iter(config, meta)
  if config.on_device_data:
    from resnet_jax.data import on_device  # pylint: disable=g-import-not-at-top
    return on_device.create_eval_iter(config, meta)
  from resnet_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return devices.prefetch_to_devices(tf_pipeline.eval_batches(config, meta),
                                     config.prefetch_batches)

"""Input pipelines: tfds datasets, local image folders, on-device and fake data.

Public API (see docs/CONTRACTS.md, "Data"):

    meta = data.prepare(config)                 # once: may download (config.download)
    meta = data.dataset_meta(config)            # never downloads
    mesh = parallel.make_mesh(config)
    train_iter = data.create_train_iter(config, meta, mesh, start_step=step)
    for batch in data.create_eval_iter(config, meta, mesh): ...
    x = data.device_preprocess(config, rng, images, train=True)  # per device, in the step

Batches are dicts of global arrays sharded over the mesh's data axes
(`parallel.DATA_AXES`): 'image' uint8 [global_batch, H, W, C] and 'label'
int32 [global_batch], plus 'mask' (bool, False on padding) in evaluation
batches. Each process produces its own share; `parallel.shard_batch`
assembles the global arrays.

Importing this package does not import TensorFlow; only the tf.data and tfds
paths do, when called. 'fake' data and `device_preprocess` never do.

Modules, one job each: `meta` (DatasetMeta, config checks), `devices`
(onto the mesh, eval padding counts, seeds), `sources` (tfds builders,
offline checks), `folder` (folder:PATH datasets), `tf_augment` +
`tf_pipeline` (the tf.data host pipeline), `on_device` (data resident on the
devices), `preprocess` (in-step JAX preprocessing), `fake` (synthetic data);
`python -m resnet_jax.data --config=...` prepares a config's dataset.
"""

from typing import Iterator

from resnet_jax import parallel
from resnet_jax.errors import ConfigError
from resnet_jax.data import devices
from resnet_jax.data import fake
from resnet_jax.data import meta as _meta
from resnet_jax.data.meta import DatasetMeta
from resnet_jax.data.meta import steps_per_epoch
from resnet_jax.data.preprocess import device_preprocess

__all__ = [
    'DatasetMeta', 'dataset_meta', 'input_spec', 'prepare', 'steps_per_epoch',
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
  if config.dataset == _meta.FAKE:
    return fake.dataset_meta(config)
  from resnet_jax.data import pil_folder  # pylint: disable=g-import-not-at-top
  if pil_folder.use_pil(config):
    return pil_folder.dataset_meta(config)
  from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  builder = sources.prepared_builder(config, allow_download=False)
  return sources.dataset_meta(config, builder)


def input_spec(config, image_size: int = 0, num_classes: int = 0,
               ) -> tuple[tuple[int, int, int], int]:
  """(image shape (H, W, C), num_classes) of a config's model input, without the data.

  For tools that need the shapes but not the examples (summary, benchmark).
  Precedence: the arguments when > 0, then config.image_size /
  config.num_classes when > 0, then the dataset's known shape
  (`meta.KNOWN_SHAPES`), then the prepared dataset's info (a folder dataset is
  prepared on first use).

  Raises:
    ConfigError: neither the config nor the dataset says.
  """
  size = image_size if image_size > 0 else config.image_size
  classes = num_classes if num_classes > 0 else config.num_classes
  if size and classes:
    return (size, size, 3), classes
  if config.dataset == _meta.FAKE:
    meta = fake.dataset_meta(config)
    known = (meta.image_shape[0], meta.num_classes)
  elif config.dataset in _meta.KNOWN_SHAPES:
    known = _meta.KNOWN_SHAPES[config.dataset]
  else:
    try:
      meta = dataset_meta(config)
    except ConfigError as e:
      missing = ' and '.join(f'--config.{n}' for n, v in (
          ('image_size', size), ('num_classes', classes)) if not v)
      raise ConfigError(f'cannot tell the input of dataset {config.dataset!r} without '
                        f'its data ({e}); set {missing}') from None
    known = (meta.image_shape[0], meta.num_classes)
  return (size or known[0], size or known[0], 3), classes or known[1]


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
  from resnet_jax.data import pil_folder  # pylint: disable=g-import-not-at-top
  if config.dataset != _meta.FAKE and not pil_folder.use_pil(config):
    from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
    sources.prepared_builder(config, allow_download=config.download)
  return dataset_meta(config)


def create_train_iter(config, meta: DatasetMeta, mesh=None, *,
                      start_step: int = 0) -> Iterator[dict]:
  """Endless training batches on the local devices, resumable at any step.

  Deterministic from config.seed: epoch e is shuffled (and augmented) by
  (seed, e), and a new epoch starts every `steps_per_epoch` steps. Starting
  at `start_step` yields exactly the batches an uninterrupted run yields from
  that step on.

  Args:
    config: the config (dataset, batch_size, augment, on_device_data, ...).
    meta: `dataset_meta(config)`.
    mesh: the run's mesh; None = `parallel.make_mesh(config)`.
    start_step: global step of the first batch (a restored checkpoint's step).

  Returns:
    An iterator of {'image': uint8 [B, H, W, C], 'label': int32 [B]}, global
    arrays sharded over the mesh's data axes (B = config.batch_size).
  """
  steps_per_epoch(config, meta)
  mesh = mesh or parallel.make_mesh(config)
  if start_step < 0:
    raise ConfigError(f'start_step={start_step} must be >= 0')
  if config.dataset == _meta.FAKE:
    return fake.create_train_iter(config, meta, mesh, start_step=start_step)
  if config.on_device_data:
    from resnet_jax.data import on_device  # pylint: disable=g-import-not-at-top
    return on_device.create_train_iter(config, meta, mesh, start_step=start_step)
  from resnet_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return devices.prefetch_to_mesh(
      tf_pipeline.train_batches(config, meta, start_step=start_step), mesh,
      config.prefetch_batches)


def create_eval_iter(config, meta: DatasetMeta, mesh=None) -> Iterator[dict]:
  """One pass over this process's shard of the eval split, padded and masked.

  Every eval example appears in exactly one batch of one process with
  mask=True; the last batches are padded with mask=False examples, and every
  process yields the same number of batches (so the eval step's collectives
  never hang). `config.num_eval_batches > 0` stops after that many batches.

  Returns:
    A finite iterator of {'image': uint8 [b, H, W, C], 'label': int32 [b],
    'mask': bool [b]}, global arrays sharded over the mesh's data axes
    (b = the global eval batch). `mesh`: as for create_train_iter.
  """
  mesh = mesh or parallel.make_mesh(config)
  if config.dataset == _meta.FAKE:
    return fake.create_eval_iter(config, meta, mesh)
  if config.on_device_data:
    from resnet_jax.data import on_device  # pylint: disable=g-import-not-at-top
    return on_device.create_eval_iter(config, meta, mesh)
  from resnet_jax.data import tf_pipeline  # pylint: disable=g-import-not-at-top
  return devices.prefetch_to_mesh(tf_pipeline.eval_batches(config, meta), mesh,
                                  config.prefetch_batches)

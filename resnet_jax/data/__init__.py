"""The input pipeline: random-access sources, grain host batches, one placement.

    spec = data.resolve(config)              # once, with every data check
    inputs = data.open_input(spec, prepare=True)
    for batch in inputs.train_batches(mesh, start_step=step): ...
    for batch in inputs.eval_batches(mesh): ...
    x = data.placement.preprocess(images, mean=..., std=...)   # in the step

Batches are dicts of global arrays sharded over the mesh's data axes:
'image' uint8 [global_batch, H, W, C], 'label' int32 [global_batch], and in
evaluation 'mask' (bool, False on padding).

Modules, one job each: `spec` (DataSpec from the config, DatasetMeta: the
only reader of the config here), `sources` (random-access sources, split
expressions, the one choice by dataset kind), `folder` (folder:PATH
indexes), `tfds_source` (registered tfds datasets), `transforms` (per-example
PIL/numpy transforms), `loader` (grain: order, rows per process, workers,
batches, padding), `placement` (onto the mesh: streamed or resident; in-step
preprocessing). Importing this package imports no TensorFlow (and jax only
through grain's profiler): the loader's worker processes import its modules.
"""

import dataclasses
import math
from typing import Iterator

from resnet_jax.data import sources
from resnet_jax.data import spec as spec_lib
from resnet_jax.data.sources import Dataset
from resnet_jax.data.spec import DataSpec
from resnet_jax.data.spec import DatasetMeta
from resnet_jax.data.spec import resolve
from resnet_jax.errors import ConfigError

__all__ = ['DataSpec', 'DatasetMeta', 'Dataset', 'Input', 'resolve', 'open_input',
           'input_shape']

# Largest train split kept on every device by placement='auto' (decoded bytes).
RESIDENT_LIMIT = 1 << 30


def _resident(spec: DataSpec, dataset: Dataset) -> bool:
  """Whether the train split lives on the devices (placement 'device', or 'auto')."""
  size = dataset.meta.image_shape[0]
  fits = tuple(dataset.native_hw) == (size, size) and spec.augment != 'imagenet'
  if spec.placement == 'device':
    if not fits:
      raise ConfigError(
          f"placement='device' keeps images at their stored size "
          f'{tuple(dataset.native_hw)}, but the model takes {size}x{size}: set '
          '--config.image_size=0, or --config.placement=host')
    return True
  rows = min(dataset.meta.num_train, getattr(dataset.train, 'period', dataset.meta.num_train))
  return (spec.placement == 'auto' and fits
          and rows * math.prod(dataset.meta.image_shape) <= RESIDENT_LIMIT)


@dataclasses.dataclass(frozen=True)
class Input:
  """An opened dataset and how it reaches the devices.

  Attributes:
    spec: the data spec.
    dataset: meta and sources.
    resident: the train split lives on the devices, augmented in the step.
  """
  spec: DataSpec
  dataset: Dataset
  resident: bool

  @property
  def meta(self) -> DatasetMeta:
    return self.dataset.meta

  @property
  def steps_per_epoch(self) -> int:
    return self.meta.steps_per_epoch(self.spec.batch_size)

  @property
  def augment_in_step(self) -> bool:
    """Whether the step applies the random crop + flip (resident 'cifar' data)."""
    return self.resident and self.spec.augment == 'cifar'

  def _layout(self, global_size: int):
    from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    parallel.batch_layout(global_size)
    return loader.Layout(global_size, parallel.process_index(), parallel.process_count())

  def train_batches(self, mesh, *, start_step: int = 0) -> Iterator[dict]:
    """Endless training batches from `start_step` on (global arrays on the mesh)."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
    spec, meta = self.spec, self.meta
    if start_step < 0:
      raise ConfigError(f'start_step={start_step} must be >= 0')
    if self.resident:
      stream = loader.train_stream(self.dataset.train, seed=spec.seed,
                                   steps_per_epoch=self.steps_per_epoch,
                                   global_batch=spec.batch_size)
      per_epoch = self.steps_per_epoch * spec.batch_size
      return placement.resident(
          self.resident_arrays(),
          lambda e: [stream.example(e * per_epoch + i) for i in range(per_epoch)],
          mesh=mesh, steps_per_epoch=self.steps_per_epoch,
          global_batch=spec.batch_size, start_step=start_step)
    transform = transforms.Transform(spec.augment, meta.image_shape[0], spec.eval_resize)
    batches = loader.train_batches(
        self.dataset.train, transform, seed=spec.seed,
        steps_per_epoch=self.steps_per_epoch, layout=self._layout(spec.batch_size),
        start_step=start_step, workers=spec.workers)
    return placement.stream(batches, mesh, spec.prefetch)

  def num_eval_batches(self) -> int:
    """Global eval batches: the whole split (padded), or config.num_eval_batches."""
    n = math.ceil(self.meta.num_eval / self.spec.eval_batch_size)
    return min(n, self.spec.num_eval_batches) if self.spec.num_eval_batches > 0 else n

  def eval_batches(self, mesh) -> Iterator[dict]:
    """One pass over the eval split, padded and masked (global arrays on the mesh)."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
    spec, meta = self.spec, self.meta
    transform = transforms.Transform(spec.augment, meta.image_shape[0], spec.eval_resize,
                                     train=False)
    # Decoded arrays at their size need no decoding: worker processes would
    # cost more to start than they save.
    cheap = self.dataset.decoded and spec.augment != 'imagenet'
    batches = loader.eval_batches(
        self.dataset.eval, transform, layout=self._layout(spec.eval_batch_size),
        num_batches=self.num_eval_batches(), image_shape=meta.image_shape,
        workers=0 if cheap else spec.workers)
    return placement.stream(batches, mesh, spec.prefetch)

  def resident_arrays(self):
    """(images, labels) of the whole train split, decoded at the model's size."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
    source = self.dataset.train
    if hasattr(source, 'arrays'):
      return source.arrays()
    transform = transforms.Transform('none', self.meta.image_shape[0], train=False)
    return loader.materialize(source, transform, image_shape=self.meta.image_shape,
                              workers=self.spec.workers)


def open_input(spec: DataSpec, *, prepare: bool = False) -> Input:
  """Opens spec's dataset and decides its placement.

  Args:
    spec: the resolved data spec.
    prepare: allow preparing (and, with spec.download, downloading) a tfds
      dataset that is not prepared; training passes True, evaluation False.
  """
  dataset = sources.open_dataset(spec, prepare=prepare)
  return Input(spec=spec, dataset=dataset, resident=_resident(spec, dataset))


def input_shape(spec: DataSpec) -> tuple[tuple[int, int, int], int]:
  """(image shape, classes) of the model input, without the data where possible.

  For tools that need shapes only (summary, benchmark): the config's
  image_size / num_classes when set, then the dataset's known shape, then the
  dataset itself (a folder is indexed on first use).

  Raises:
    ConfigError: neither the config nor the dataset says.
  """
  size, classes = spec.image_size, spec.num_classes
  if not (size and classes):
    if spec.kind == 'fake':
      meta = sources.open_fake(spec).meta
      known = (meta.image_shape[0], meta.num_classes)
    elif spec.dataset in spec_lib.KNOWN_SHAPES:
      known = spec_lib.KNOWN_SHAPES[spec.dataset]
    else:
      try:
        meta = sources.open_dataset(spec).meta
      except ConfigError as e:
        missing = ' and '.join(f'--config.{n}' for n, v in (
            ('image_size', size), ('num_classes', classes)) if not v)
        raise ConfigError(f'cannot tell the input of dataset {spec.dataset!r} without '
                          f'its data ({e}); set {missing}') from None
      known = (meta.image_shape[0], meta.num_classes)
    size, classes = size or known[0], classes or known[1]
  return (size, size, 3), classes


"""The input pipeline: random-access sources, grain host batches, one placement.

    spec = data.resolve(config)                   # once, with every data check
    inputs = data.open_input(spec, prepare=True)
    for batch in inputs.train_batches(mesh, start_step=step): ...
    for batch in inputs.eval_batches(mesh): ...   # 'mask' False on padding

Batches are dicts of global arrays sharded over the mesh's data axes: 'image'
uint8 [global_batch, H, W, C], 'label' int32. One module a job (each says its
own): spec, sources, folder, tfds_source, transforms, loader, placement.
Importing this package imports neither TensorFlow nor grain: worker processes
and tools import its modules.
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

# Largest train split placement='auto' keeps on every device (decoded bytes).
RESIDENT_LIMIT = 1 << 30


@dataclasses.dataclass(frozen=True)
class Input:
  """An opened dataset and how it reaches the devices (`resident`: the train
  split lives on every device and the step crops and flips it)."""
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
    return self.resident and self.spec.augment == 'cifar'

  def _transform(self, augment: str, train: bool):
    from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
    spec = self.spec
    return transforms.Transform(
        augment, self.meta.image_shape[0], spec.eval_resize, train, spec.rand_augment,
        spec.trivial_augment, spec.random_erasing, spec.random_erasing_mode,
        self.meta.mean, self.meta.std)

  def _layout(self, global_size: int):
    from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    parallel.batch_layout(global_size)
    return loader.Layout(global_size, parallel.process_index(), parallel.process_count())

  def train_batches(self, mesh, *, start_step: int = 0) -> Iterator[dict]:
    """Endless training batches from `start_step` on (global arrays on the mesh)."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
    spec, steps = self.spec, self.steps_per_epoch
    if start_step < 0:
      raise ConfigError(f'start_step={start_step} must be >= 0')
    if self.resident:
      stream = loader.TrainStream(self.dataset.train, seed=spec.seed, steps_per_epoch=steps,
                                  global_batch=spec.batch_size,
                                  repeats=spec.repeated_augmentation)
      n = steps * spec.batch_size
      return placement.resident(
          self.resident_arrays(), lambda e: [stream.example(e * n + i) for i in range(n)],
          mesh=mesh, steps_per_epoch=steps, global_batch=spec.batch_size,
          start_step=start_step)
    batches = loader.train_batches(
        self.dataset.train, self._transform(spec.augment, True), seed=spec.seed,
        steps_per_epoch=steps, layout=self._layout(spec.batch_size), start_step=start_step,
        workers=spec.workers, repeats=spec.repeated_augmentation)
    return placement.stream(batches, mesh, spec.prefetch)

  def eval_batches(self, mesh) -> Iterator[dict]:
    """One pass over the eval split (or num_eval_batches), padded and masked."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
    spec = self.spec
    n = math.ceil(self.meta.num_eval / spec.eval_batch_size)
    # Decoded arrays at their size need no work: starting workers costs more.
    cheap = self.dataset.decoded and spec.augment != 'imagenet'
    batches = loader.eval_batches(
        self.dataset.eval, self._transform(spec.augment, False),
        layout=self._layout(spec.eval_batch_size), image_shape=self.meta.image_shape,
        num_batches=min(n, spec.num_eval_batches) if spec.num_eval_batches > 0 else n,
        workers=0 if cheap else spec.workers)
    return placement.stream(batches, mesh, spec.prefetch)

  def resident_arrays(self):
    """(images, labels) of the whole train split, decoded at the model's size."""
    from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
    source = self.dataset.train
    if hasattr(source, 'arrays'):
      return source.arrays()
    return loader.materialize(source, self._transform('none', False),
                              image_shape=self.meta.image_shape, workers=self.spec.workers)


def open_input(spec: DataSpec, *, prepare: bool = False) -> Input:
  """Opens spec's dataset (a folder is indexed on first use) and decides its placement.

  `prepare` allows preparing (with spec.download, downloading) a registered
  tfds dataset that is not prepared: training passes True, evaluation False.
  """
  dataset = sources.open_dataset(spec, prepare=prepare)
  meta, size = dataset.meta, dataset.meta.image_shape[0]
  fits = (tuple(dataset.native_hw) == (size, size) and spec.augment != 'imagenet'
          and not spec.host_augment)
  if spec.placement == 'device' and not fits:
    raise ConfigError(f"placement='device' keeps images at their stored size "
                      f'{tuple(dataset.native_hw)}, but the model takes {size}x{size}: set '
                      '--config.image_size=0, or --config.placement=host')
  rows = min(meta.num_train, getattr(dataset.train, 'period', meta.num_train))
  resident = spec.placement == 'device' or (
      spec.placement == 'auto' and fits and rows * math.prod(meta.image_shape) <= RESIDENT_LIMIT)
  return Input(spec=spec, dataset=dataset, resident=resident)


def input_shape(spec: DataSpec) -> tuple[tuple[int, int, int], int]:
  """(image shape, classes) of the model input, without the data where possible.

  The config's image_size / num_classes, else the dataset's known shape, else
  the dataset itself (a folder is indexed on first use); ConfigError if none.
  """
  size, classes = spec.image_size, spec.num_classes
  if not (size and classes):
    known = spec_lib.KNOWN_SHAPES.get(spec.dataset)
    if known is None:
      try:
        meta = sources.open_dataset(spec).meta
      except ConfigError as e:
        missing = ' and '.join(f'--config.{n}' for n, v in (
            ('image_size', size), ('num_classes', classes)) if not v)
        raise ConfigError(f'cannot tell the input of dataset {spec.dataset!r} without its '
                          f'data ({e}); set {missing}') from None
      known = (meta.image_shape[0], meta.num_classes)
    size, classes = size or known[0], classes or known[1]
  return (size, size, 3), classes

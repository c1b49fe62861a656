"""The data section of the config, resolved once: `DataSpec`, and `DatasetMeta`.

`resolve(config)` is the only place in `resnet_jax.data` that reads the
config, and the one home of every data field's checks; below it, functions
take the spec (or the fields they need). `DatasetMeta` is what opening the
dataset tells (classes, image shape, split sizes, normalisation statistics).
No jax, no TensorFlow: worker processes import this module.
"""

import dataclasses
import os

from resnet_jax.errors import ConfigError

FOLDER_PREFIX = 'folder:'
FAKE = 'fake'
AUGMENTS = ('cifar', 'imagenet', 'none')
PLACEMENTS = ('auto', 'device', 'host')
ON_CORRUPT = ('skip', 'error')
# The 'imagenet' augmentation's output size when config.image_size is 0.
IMAGENET_SIZE = 224
# Per-channel statistics in [0, 1] units: the training sets' published values.
STATISTICS = {
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Datasets whose model input is known without reading them: name -> (image
# size as fed to the model, classes). Tools that need shapes only use it.
KNOWN_SHAPES = {
    'cifar10': (32, 10),
    'cifar100': (32, 100),
    'imagenet2012': (IMAGENET_SIZE, 1000),
    'imagenette': (IMAGENET_SIZE, 10),
}


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the input pipeline needs from the config, checked.

  Attributes:
    dataset: as configured ('cifar10', 'folder:/abs/path', 'fake').
    kind: 'tfds', 'folder' or 'fake'.
    path: the folder source (absolute), or ''.
    data_dir: where tfds datasets and folder caches live (absolute).
    manual_dir: archives obtained by hand for tfds preparation, or ''.
    download: whether tfds may download an unprepared dataset.
    train_split, eval_split: split expressions; '' = the dataset's defaults.
    image_size: side of the model input; 0 = native (224 for 'imagenet').
    augment: 'cifar', 'imagenet' or 'none'.
    eval_resize: 0 (TF reference centre crop) or torchvision's Resize(N).
    mean, std: normalisation statistics in [0, 1] units; () = the dataset's.
    num_classes: classifier width; 0 = the dataset's.
    placement: 'auto', 'device' (the train split resident on every device,
      augmented in the step) or 'host' (streamed from worker processes).
    workers: host worker processes; 0 = in this process.
    prefetch: batches in flight to the devices.
    on_corrupt: 'skip' or 'error' for unreadable images of a folder.
    seed: the run's seed (shuffle and augmentation).
    batch_size, eval_batch_size: global batch sizes.
    num_eval_batches: -1 = the whole eval split.
  """
  dataset: str
  kind: str
  path: str
  data_dir: str
  manual_dir: str
  download: bool
  train_split: str
  eval_split: str
  image_size: int
  augment: str
  eval_resize: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_classes: int
  placement: str
  workers: int
  prefetch: int
  on_corrupt: str
  seed: int
  batch_size: int
  eval_batch_size: int
  num_eval_batches: int


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What opening a dataset tells: shapes, sizes, classes, statistics.

  Attributes:
    name: the dataset ('cifar10', 'folder:/data/x.tar.gz', 'fake').
    num_classes: classifier width (config.num_classes, else the dataset's).
    image_shape: (H, W, C) of the images fed to the model.
    num_train, num_eval: GLOBAL examples in the train / eval split used.
    train_split, eval_split: the split expressions used.
    mean, std: per-channel normalisation statistics in [0, 1] units.
    class_names: label i is class_names[i] (empty where the dataset has none).
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_eval: int
  train_split: str
  eval_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...] = ()

  def steps_per_epoch(self, batch_size: int) -> int:
    """Training steps per epoch: num_train // batch_size (the remainder dropped)."""
    steps = self.num_train // batch_size
    if steps < 1:
      raise ConfigError(
          f'batch_size={batch_size} is larger than the {self.num_train} training '
          f'examples of {self.name!r} ({self.train_split})')
    return steps


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
  return os.path.expanduser(os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _statistics(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
  mean, std = tuple(config.mean), tuple(config.std)
  if not mean and not std:
    return (), ()
  if len(mean) != 3 or len(std) != 3 or not all(
      isinstance(v, (int, float)) for v in mean + std) or min(std) <= 0:
    raise ConfigError(
        f'mean={mean} and std={std} must both be 3 per-channel values in [0, 1] '
        'units (std > 0), e.g. --config.mean="(0.485, 0.456, 0.406)" '
        '--config.std="(0.229, 0.224, 0.225)" (ImageNet\'s), or both () for the '
        "dataset's own")
  return tuple(map(float, mean)), tuple(map(float, std))


def resolve(config) -> DataSpec:
  """The checked DataSpec of a config (the data fields of configs/base.py).

  Raises:
    ConfigError: any data field outside its valid values (one line: what is
      wrong and what to do).
  """
  dataset = config.dataset
  if not isinstance(dataset, str) or not dataset:
    raise ConfigError("dataset must be a tfds name ('cifar10'), 'folder:PATH' or 'fake'")
  path = ''
  if dataset.startswith(FOLDER_PREFIX):
    kind = 'folder'
    path = os.path.abspath(os.path.expanduser(dataset[len(FOLDER_PREFIX):]))
    if not dataset[len(FOLDER_PREFIX):]:
      raise ConfigError("dataset='folder:' needs a path: folder:/data/images or "
                        'folder:/data/images.tar.gz (laid out split/class/image)')
  elif dataset == FAKE:
    kind = 'fake'
  else:
    kind = 'tfds'
  if config.augment not in AUGMENTS:
    raise ConfigError(f'augment={config.augment!r} is not valid; choose one of {AUGMENTS}')
  if config.placement not in PLACEMENTS:
    raise ConfigError(f'placement={config.placement!r} is not valid; choose one of '
                      f'{PLACEMENTS}')
  if config.placement == 'device' and config.augment == 'imagenet':
    raise ConfigError(
        "placement='device' keeps fixed-size images on the devices and supports "
        "augment='cifar' or 'none'; use --config.placement=host (or auto) for "
        "augment='imagenet'")
  if config.on_corrupt_image not in ON_CORRUPT:
    raise ConfigError(f'on_corrupt_image={config.on_corrupt_image!r} is not valid; '
                      f'choose one of {ON_CORRUPT}')
  for name in ('image_size', 'num_classes', 'prefetch_batches'):
    if not _is_int(config[name]) or config[name] < 0:
      raise ConfigError(f'{name}={config[name]!r} must be an integer >= 0')
  if not _is_int(config.num_workers) or config.num_workers < -1:
    raise ConfigError(f'num_workers={config.num_workers!r} must be -1 (one per CPU '
                      'core), 0 (in the training process) or a number of processes')
  eval_resize = config.eval_resize
  if not _is_int(eval_resize) or (
      eval_resize and eval_resize < (config.image_size or IMAGENET_SIZE)):
    raise ConfigError(f'eval_resize={eval_resize!r} must be 0 (centre crop) or a '
                      'shorter side >= image_size (torchvision: 256)')
  if not _is_int(config.seed):
    raise ConfigError(f'seed={config.seed!r} must be an integer')
  if not _is_int(config.num_eval_batches) or (
      config.num_eval_batches < 1 and config.num_eval_batches != -1):
    raise ConfigError(f'num_eval_batches={config.num_eval_batches!r} must be a positive '
                      'number of batches, or -1 (the whole eval split)')
  mean, std = _statistics(config)
  workers = config.num_workers if config.num_workers >= 0 else (os.cpu_count() or 1)
  expand = lambda p: os.path.abspath(os.path.expanduser(p)) if p else ''
  return DataSpec(
      dataset=dataset, kind=kind, path=path,
      data_dir=expand(config.data_dir) or default_data_dir(),
      manual_dir=expand(config.manual_dir), download=bool(config.download),
      train_split=config.train_split, eval_split=config.eval_split,
      image_size=config.image_size, augment=config.augment, eval_resize=eval_resize,
      mean=mean, std=std, num_classes=config.num_classes, placement=config.placement,
      workers=workers, prefetch=config.prefetch_batches,
      on_corrupt=config.on_corrupt_image, seed=config.seed,
      batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size or config.batch_size,
      num_eval_batches=config.num_eval_batches)


def output_size(spec: DataSpec, native_hw: tuple[int | None, int | None]) -> int:
  """Side length of the square images fed to the model.

  Raises:
    ConfigError: the images vary in size or are not square and no image_size
      says what to produce.
  """
  if spec.image_size:
    return spec.image_size
  if spec.augment == 'imagenet':
    return IMAGENET_SIZE
  h, w = native_hw
  if h is None or w is None or h != w:
    raise ConfigError(
        f'the images of {spec.dataset!r} have no single square size '
        f'(stored shape {tuple(native_hw)}); set --config.image_size (or use '
        "--config.augment=imagenet, which crops to 224 by default)")
  return h


def num_classes(spec: DataSpec, dataset_classes: int) -> int:
  """spec.num_classes when set (never fewer than the labels), else the dataset's."""
  if not spec.num_classes:
    return dataset_classes
  if spec.num_classes < dataset_classes:
    raise ConfigError(
        f'num_classes={spec.num_classes} is smaller than the {dataset_classes} '
        f'classes of {spec.dataset!r}; set --config.num_classes=0 (from the data)')
  return spec.num_classes


def statistics(spec: DataSpec, dataset_default: tuple | None,
               ) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std): the config's when set, else the dataset's, else ImageNet's."""
  if spec.mean:
    return spec.mean, spec.std
  return dataset_default or STATISTICS['imagenet']

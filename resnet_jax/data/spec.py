"""The data section of the config, resolved once (`DataSpec`), and a dataset's facts.

`resolve(config)` is the only reader of the config in `resnet_jax.data` and
the one home of the data fields' checks; below it, code takes the spec.
`DatasetMeta` is what opening the dataset tells. No jax, no TensorFlow:
worker processes import this module.
"""

import dataclasses
import os

from resnet_jax.errors import ConfigError

AUGMENTS = ('cifar', 'imagenet', 'none')
PLACEMENTS = ('auto', 'device', 'host')
ON_CORRUPT = ('skip', 'error')
IMAGENET_SIZE = 224  # The 'imagenet' augmentation's output when image_size is 0.
# Per-channel statistics in [0, 1] units: the training sets' published values.
STATISTICS = {
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Model input known without the data: name -> (image size, classes).
KNOWN_SHAPES = {'cifar10': (32, 10), 'cifar100': (32, 100),
                'imagenet2012': (IMAGENET_SIZE, 1000), 'imagenette': (IMAGENET_SIZE, 10)}


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The data fields of the config (configs/base.py documents each), checked.

  Resolved on top of the fields: `kind` ('tfds', 'folder', 'fake'), `path`
  (a folder's, absolute), `data_dir` (absolute, tfds' default when unset),
  `workers` (-1 resolved to the CPU count), `eval_batch_size` (0 resolved to
  batch_size), `mean`/`std` (() = the dataset's).
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
  rand_augment: str = ''
  trivial_augment: bool = False
  random_erasing: float = 0.0
  random_erasing_mode: str = 'pixel'
  repeated_augmentation: int = 1

  @property
  def host_augment(self) -> bool:
    """Whether the training augmentation needs the host (RandAugment and the like)."""
    return bool(self.rand_augment or self.trivial_augment or self.random_erasing)


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What opening a dataset tells.

  Attributes:
    name: the dataset ('cifar10', 'folder:/data/x.tar.gz', 'fake').
    num_classes: classifier width (config.num_classes, else the dataset's).
    image_shape: (H, W, C) of the images fed to the model.
    num_train, num_eval: GLOBAL examples of the train / eval split used.
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
    """num_train // batch_size: every epoch drops its remainder."""
    if self.num_train < batch_size:
      raise ConfigError(f'batch_size={batch_size} is larger than the {self.num_train} '
                        f'training examples of {self.name!r} ({self.train_split})')
    return self.num_train // batch_size


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def resolve(config) -> DataSpec:
  """The checked DataSpec of a config; ConfigError (what is wrong, what to do) if not."""
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  dataset = config.dataset
  kind = 'folder' if dataset.startswith('folder:') else 'fake' if dataset == 'fake' else 'tfds'
  _check(dataset not in ('', 'folder:'), f'dataset={dataset!r} names no dataset: give a '
         "tfds name ('cifar10'), folder:PATH (a split/class/image tree or .tar.gz) or 'fake'")
  for name, choices in (('augment', AUGMENTS), ('placement', PLACEMENTS),
                        ('on_corrupt_image', ON_CORRUPT)):
    _check(config[name] in choices,
           f'{name}={config[name]!r} is not valid; choose one of {choices}')
  _check(not (config.placement == 'device' and config.augment == 'imagenet'),
         "placement='device' keeps fixed-size images on the devices (augment='cifar' or "
         "'none'); use --config.placement=host (or auto) for augment='imagenet'")
  for name in ('image_size', 'num_classes', 'prefetch_batches'):
    _check(is_int(config[name]) and config[name] >= 0,
           f'{name}={config[name]!r} must be an integer >= 0')
  _check(is_int(config.num_workers) and config.num_workers >= -1,
         f'num_workers={config.num_workers!r} must be -1 (one per CPU core), 0 (in the '
         'training process) or a number of worker processes')
  resize = config.eval_resize
  _check(is_int(resize) and (not resize or resize >= (config.image_size or IMAGENET_SIZE)),
         f'eval_resize={resize!r} must be 0 (centre crop) or a shorter side >= image_size '
         '(torchvision: 256)')
  _check(is_int(config.seed), f'seed={config.seed!r} must be an integer')
  _check(is_int(config.num_eval_batches) and (config.num_eval_batches >= 1 or
                                              config.num_eval_batches == -1),
         f'num_eval_batches={config.num_eval_batches!r} must be a positive number of '
         'batches, or -1 (the whole eval split)')
  if config.rand_augment:
    from resnet_jax.augment import autoaugment  # pylint: disable=g-import-not-at-top
    autoaugment.parse_rand_augment(config.rand_augment)  # ConfigError naming the bad part.
  _check(not (config.rand_augment and config.trivial_augment),
         'rand_augment and trivial_augment are alternatives: set one of them')
  _check(0 <= config.random_erasing <= 1, f'random_erasing={config.random_erasing} is a '
         'probability in [0, 1] (ResNet strikes back: 0; Zhong et al.: 0.5)')
  _check(config.random_erasing_mode in ('const', 'rand', 'pixel'), 'random_erasing_mode='
         f"{config.random_erasing_mode!r} is not valid; choose 'const', 'rand' or 'pixel'")
  k = config.repeated_augmentation
  _check(is_int(k) and k >= 1 and config.batch_size % k == 0,
         f'repeated_augmentation={k!r} must be a number of copies >= 1 (1 = off; ResNet '
         f'strikes back: 3) that divides batch_size={config.batch_size}')
  mean, std = tuple(config.mean), tuple(config.std)
  _check((not mean and not std) or (
      len(mean) == len(std) == 3 and all(isinstance(v, (int, float)) for v in mean + std)
      and min(std) > 0), f'mean={mean} and std={std} must both be 3 per-channel values '
         'in [0, 1] units (std > 0), e.g. --config.mean="(0.485, 0.456, 0.406)" '
         '--config.std="(0.229, 0.224, 0.225)" (ImageNet\'s), or both () for the dataset\'s')
  expand = lambda p: os.path.abspath(os.path.expanduser(p)) if p else ''
  spec = DataSpec(
      dataset=dataset, kind=kind, path=expand(dataset[7:]) if kind == 'folder' else '',
      data_dir=expand(config.data_dir or os.environ.get('TFDS_DATA_DIR') or
                      '~/tensorflow_datasets'),
      manual_dir=expand(config.manual_dir), download=bool(config.download),
      train_split=config.train_split, eval_split=config.eval_split,
      image_size=config.image_size, augment=config.augment, eval_resize=resize,
      mean=tuple(map(float, mean)), std=tuple(map(float, std)),
      num_classes=config.num_classes, placement=config.placement,
      workers=config.num_workers if config.num_workers >= 0 else (os.cpu_count() or 1),
      prefetch=config.prefetch_batches, on_corrupt=config.on_corrupt_image,
      seed=config.seed, batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size or config.batch_size,
      num_eval_batches=config.num_eval_batches, rand_augment=config.rand_augment,
      trivial_augment=bool(config.trivial_augment), random_erasing=float(config.random_erasing),
      random_erasing_mode=config.random_erasing_mode, repeated_augmentation=k)
  _check(not (spec.host_augment and spec.placement == 'device'),
         "rand_augment, trivial_augment and random_erasing run in the host pipeline: use "
         "--config.placement=host (or auto)")
  return spec


def output_size(spec: DataSpec, native_hw: tuple[int | None, int | None]) -> int:
  """Side of the square images fed to the model; ConfigError when nothing says."""
  if spec.image_size or spec.augment == 'imagenet':
    return spec.image_size or IMAGENET_SIZE
  h, w = native_hw
  _check(h is not None and h == w,
         f'the images of {spec.dataset!r} have no single square size (stored shape '
         f'{tuple(native_hw)}); set --config.image_size (or use --config.augment=imagenet, '
         'which crops to 224 by default)')
  return h


def num_classes(spec: DataSpec, dataset_classes: int) -> int:
  """spec.num_classes when set (never fewer than the labels), else the dataset's."""
  _check(not spec.num_classes or spec.num_classes >= dataset_classes,
         f'num_classes={spec.num_classes} is smaller than the {dataset_classes} classes of '
         f'{spec.dataset!r}; set --config.num_classes=0 (from the data)')
  return spec.num_classes or dataset_classes


def statistics(spec: DataSpec, dataset_default) -> tuple[tuple[float, ...], ...]:
  """(mean, std): the config's when set, else the dataset's, else ImageNet's."""
  return (spec.mean, spec.std) if spec.mean else (dataset_default or STATISTICS['imagenet'])

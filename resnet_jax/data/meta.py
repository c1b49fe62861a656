"""`DatasetMeta` and the config checks every input path shares.

TensorFlow-free: the model, the trainer and the 'fake' dataset use this alone.
"""

import dataclasses

from resnet_jax.errors import ConfigError

AUGMENTS = ('cifar', 'imagenet', 'none')
CACHES = ('none', 'memory')
ON_CORRUPT = ('skip', 'error')
FOLDER_PREFIX = 'folder:'
FAKE = 'fake'
# The 'imagenet' augmentation's default output size (config.image_size = 0).
IMAGENET_SIZE = 224
# Datasets whose model input is known without reading them: name -> (image
# size as fed to the model, classes). Tools that need shapes only use it.
KNOWN_SHAPES = {
    'cifar10': (32, 10),
    'cifar100': (32, 100),
    'imagenet2012': (IMAGENET_SIZE, 1000),
    'imagenette': (IMAGENET_SIZE, 10),
}


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What the model and the training loop need to know about a dataset.

  Attributes:
    num_classes: number of labels (config.num_classes, else the dataset's).
    image_shape: (H, W, C) of the images as fed to the model (after cropping).
    num_train: GLOBAL number of examples in the train split used.
    num_eval: GLOBAL number of examples in the eval split used.
    train_split: tfds split expression of the training data ('train[:45000]').
    eval_split: tfds split expression of the evaluation data.
    name: the dataset ('cifar10', 'folder:/data/x.tar.gz', 'fake', ...).
  """
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_eval: int
  train_split: str
  eval_split: str
  name: str


def steps_per_epoch(config, meta: DatasetMeta) -> int:
  """Training steps per epoch: meta.num_train // config.batch_size (global).

  The remainder of each epoch is dropped, as every input path does.
  """
  steps = meta.num_train // config.batch_size
  if steps < 1:
    raise ConfigError(
        f'batch_size={config.batch_size} is larger than the {meta.num_train} '
        f'training examples of {meta.name!r} ({meta.train_split})')
  return steps


def validate(config) -> None:
  """Raises ConfigError for data settings outside their valid choices."""
  if config.augment not in AUGMENTS:
    raise ConfigError(
        f'augment={config.augment!r} is not valid; choose one of {AUGMENTS}')
  if config.cache not in CACHES:
    raise ConfigError(f'cache={config.cache!r} is not valid; choose one of {CACHES}')
  if config.on_corrupt_image not in ON_CORRUPT:
    raise ConfigError(f'on_corrupt_image={config.on_corrupt_image!r} is not '
                      f'valid; choose one of {ON_CORRUPT}')
  if config.image_size < 0:
    raise ConfigError(f'image_size={config.image_size} must be >= 0 (0 = native)')
  if config.num_classes < 0:
    raise ConfigError(f'num_classes={config.num_classes} must be >= 0 '
                      '(0 = from the dataset)')
  if config.on_device_data and config.augment == 'imagenet':
    raise ConfigError(
        "on_device_data=True supports augment='cifar' or 'none' (fixed-size "
        "images kept on the devices); use the tf.data pipeline "
        "(--config.on_device_data=False) for augment='imagenet'")
  eval_resize = config.eval_resize
  if isinstance(eval_resize, bool) or not isinstance(eval_resize, int) or (
      eval_resize and eval_resize < (config.image_size or IMAGENET_SIZE)):
    raise ConfigError(f'eval_resize={eval_resize!r} must be 0 (centre crop) or a '
                      'shorter side >= image_size (torchvision: 256)')
  if config.shuffle_buffer_size < 1:
    raise ConfigError(
        f'shuffle_buffer_size={config.shuffle_buffer_size} must be >= 1')
  if config.prefetch_batches < 0:
    raise ConfigError(f'prefetch_batches={config.prefetch_batches} must be >= 0')


def default_splits(config, names: list[str], num_examples) -> tuple[str, str]:
  """(train_split, eval_split): config's, else 'train' and 'test'/'validation'.

  Args:
    config: reads train_split, eval_split, dataset.
    names: the dataset's split names.
    num_examples: split expression -> its size; raises (KeyError, ValueError,
      IndexError, AssertionError) for an expression the dataset cannot read.

  Raises:
    ConfigError: no eval split to default to, or a split that does not exist.
  """
  train = config.train_split or 'train'
  eval_ = config.eval_split
  if not eval_:
    eval_ = next((s for s in ('test', 'validation', 'val') if s in names), '')
    if not eval_:
      raise ConfigError(f'{config.dataset!r} has no test or validation split '
                        f'(splits: {names}); set --config.eval_split')
  for field, split in (('train_split', train), ('eval_split', eval_)):
    try:
      num_examples(split)
    except (KeyError, ValueError, IndexError, AssertionError, NotImplementedError) as e:
      raise ConfigError(
          f'{field}={split!r} is not a valid split of {config.dataset!r} '
          f"(splits: {names}; slices like 'train[:45000]' work): {e}") from e
  return train, eval_


def output_size(config, native_hw: tuple[int | None, int | None]) -> int:
  """Side length of the square images fed to the model.

  Args:
    config: the config (image_size, augment).
    native_hw: the dataset's stored (H, W); None where images vary in size.

  Raises:
    ConfigError: the images vary in size or are not square and no image_size
      says what to produce.
  """
  if config.image_size:
    return config.image_size
  if config.augment == 'imagenet':
    return IMAGENET_SIZE
  h, w = native_hw
  if h is None or w is None or h != w:
    raise ConfigError(
        f'the images of {config.dataset!r} have no single square size '
        f'(stored shape {native_hw}); set --config.image_size (or use '
        "--config.augment=imagenet, which crops to 224 by default)")
  return h


def num_classes(config, dataset_classes: int) -> int:
  """config.num_classes when set (never fewer than the labels), else the dataset's."""
  if not config.num_classes:
    return dataset_classes
  if config.num_classes < dataset_classes:
    raise ConfigError(
        f'num_classes={config.num_classes} is smaller than the {dataset_classes} '
        f'classes of {config.dataset!r}; set --config.num_classes=0 (from the data)')
  return config.num_classes


def check_native_size(config, native_hw, what: str) -> None:
  """Paths that cannot resize (on-device data) need image_size == stored size."""
  size = output_size(config, native_hw)
  if tuple(native_hw) != (size, size):
    raise ConfigError(
        f'{what} keeps images at their stored size {tuple(native_hw)}, but '
        f'image_size={size}; set --config.image_size=0 or '
        '--config.on_device_data=False')

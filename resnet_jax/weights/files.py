"""Weight files and checkpoint workdirs: what the import and export commands read and write.

- State-dict files: `.safetensors` through the safetensors package's numpy API
  (no PyTorch needed); `.pth`/`.pt` through `torch.load(weights_only=True)` when
  PyTorch is installed (otherwise a one-line error with the conversion command).
- An imported model is a workdir, `DIR/checkpoints/0/` (our orbax checkpoint,
  written by `checkpoint.CheckpointManager` at step 0) plus `DIR/config.json`
  (the config the weights are evaluated with, written by `workdir.write_config`),
  `DIR/dataset.json` (the data the weights were trained on, as a training run
  records it: classes and their names -- ImageNet's 1,000 from
  imagenet_classes.txt, made by experiments/imagenet_classes.py -- input shape,
  splits, normalisation; `workdir.write_dataset`) and `DIR/weights.json`
  (where the weights came from: source, arch, file, SHA-256).
  `evaluate --checkpoint=DIR`, `predict --checkpoint=DIR`, `export
  --checkpoint=DIR` and `--config.init_from=DIR` take it as they take any
  run's workdir.

The checkpoint holds the weights only (step, params, batch_stats): no
optimizer state, which would be zeros the size of the model, or twice that. It
serves evaluation and `init_from` (both read params and batch_stats alone);
resuming *training* in DIR is refused with the mismatch listed, as for any
checkpoint of another optimizer.
"""

import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np

from resnet_jax.data import spec as data_spec
from resnet_jax.errors import ConfigError
from resnet_jax.weights import mapping

PROVENANCE = 'weights.json'
# ImageNet-1k's class names, label order (experiments/imagenet_classes.py).
IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                'imagenet_classes.txt')
# tfds' cifar10 label names (label order).
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
# Split sizes of the datasets the imported weights were trained on (tfds).
_SPLITS = {'imagenet2012': ('train', 1_281_167, 'validation', 50_000),
           'cifar10': ('train', 50_000, 'test', 10_000),
           'cifar100': ('train', 50_000, 'test', 10_000)}
SAFETENSORS = ('.safetensors',)
TORCH_FILES = ('.pth', '.pt', '.bin')
# Training checkpoints (timm's train.py, torchvision's references) nest the
# state dict under one of these keys.
_NESTED = ('state_dict', 'model')
_SAFETENSORS_PIN = 'safetensors==0.8.0'


def _safetensors_numpy():
  try:
    from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(f'reading and writing .safetensors needs the safetensors package: '
                      f'pip install {_SAFETENSORS_PIN}') from None
  return st_numpy


def _convert_command(path: str) -> str:
  out = os.path.splitext(path)[0] + '.safetensors'
  return ('python -c "import torch; from safetensors.torch import save_file; '
          f"save_file(torch.load('{path}', map_location='cpu', weights_only=True), "
          f"'{out}')\"")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """{key: numpy array} from a `.safetensors` file, or a `.pth`/`.pt` one (needs torch).

  Raises:
    ConfigError: the file is missing, of another kind, or needs PyTorch that is
      not installed (the message has the command that converts it).
  """
  if not os.path.isfile(path):
    raise ConfigError(f'weights file {path} does not exist')
  ext = os.path.splitext(path)[1].lower()
  if ext in SAFETENSORS:
    try:
      return dict(_safetensors_numpy().load_file(path))
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise ConfigError(f'cannot read {path} as safetensors: {e}') from e
  if ext not in TORCH_FILES:
    raise ConfigError(f'weights file {path}: expected .safetensors, or .pth/.pt (PyTorch)')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        f'{path} is a PyTorch pickle and reading it needs torch, which is not installed; '
        'convert it to safetensors where torch is, then import the .safetensors file: '
        + _convert_command(path)) from None
  obj = torch.load(path, map_location='cpu', weights_only=True)
  for key in _NESTED:
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping) and not any(
        isinstance(v, torch.Tensor) for v in obj.values()):
      obj = obj[key]
  if not isinstance(obj, Mapping):
    raise ConfigError(f'{path} holds a {type(obj).__name__}, not a state dict')
  out = {}
  for k, v in obj.items():
    if not isinstance(v, torch.Tensor):
      raise ConfigError(f'{path}: entry {k!r} is a {type(v).__name__}, not a tensor')
    v = v.detach().cpu()
    out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
  return out


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str,
                    metadata: Mapping[str, str] | None = None) -> None:
  """Writes `.safetensors` (PyTorch: `safetensors.torch.load_file(path)`)."""
  if os.path.splitext(path)[1].lower() not in SAFETENSORS:
    raise ConfigError(f'--output={path}: export writes .safetensors (PyTorch reads it '
                      'with safetensors.torch.load_file, no pickle involved)')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _safetensors_numpy().save_file(
      # np.asarray, not np.ascontiguousarray: that makes 0-d arrays 1-d.
      {k: np.asarray(v, order='C') for k, v in state_dict.items()}, path,
      metadata={'format': 'pt', **(metadata or {})})


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      digest.update(chunk)
  return digest.hexdigest()


# --- Workdirs -----------------------------------------------------------------


def eval_config(arch: str, source: str, num_classes: int, *,
                shortcut: str | None = None, eval_resize: int = 256):
  """The config an imported model is evaluated with (written as DIR/config.json).

  configs/base.py with the model's every field, its number of classes, float32,
  and the data the weights were trained for: ImageNet at 224 with torchvision's
  eval transform (shorter side resized to `eval_resize`, centre crop 224) for
  torchvision/timm; CIFAR at 32x32 for torch_cifar.
  """
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(configlib.BASE_CONFIG):
    raise ConfigError(f'{configlib.BASE_CONFIG} not found: the import command writes a '
                      'config derived from configs/base.py; run it from a source checkout')
  config = configlib.load(configlib.BASE_CONFIG)
  fields = mapping.resolved_model_config(arch, source, shortcut=shortcut)
  for key, value in fields.items():
    config.model[key] = value
  config.num_classes = int(num_classes)
  config.dtype = 'float32'
  if source == 'torch_cifar':
    config.dataset = 'cifar100' if num_classes == 100 else 'cifar10'
    config.augment = 'cifar'
    config.image_size = 32
  else:
    config.dataset = 'imagenet2012'
    config.augment = 'imagenet'
    config.image_size = 224
    config.eval_resize = int(eval_resize)
  # The statistics the weights were trained with, recorded: evaluation,
  # fine-tuning and export use them whatever dataset they read.
  config.mean, config.std = data_spec.STATISTICS.get(config.dataset,
                                                 data_spec.STATISTICS['imagenet'])
  return config


def imagenet_class_names() -> tuple[str, ...]:
  """The 1,000 ImageNet class names, label order; () where the file is missing."""
  if not os.path.isfile(IMAGENET_CLASSES):
    return ()
  with open(IMAGENET_CLASSES, encoding='utf-8') as f:
    names = tuple(line.rstrip('\n') for line in f if line.strip())
  return names if len(names) == 1000 else ()


def dataset_meta(config):
  """What an imported model's dataset.json records: the data `eval_config` names.

  The classes' names where the head is that dataset's (ImageNet's 1,000,
  CIFAR-10's 10); none for a head of another size.
  """
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  train_split, num_train, eval_split, num_eval = _SPLITS[config.dataset]
  names = {'imagenet2012': imagenet_class_names, 'cifar10': lambda: CIFAR10_CLASSES}.get(
      config.dataset, lambda: ())()
  return data.DatasetMeta(
      name=config.dataset, num_classes=config.num_classes,
      image_shape=(config.image_size, config.image_size, 3), num_train=num_train,
      num_eval=num_eval, train_split=train_split, eval_split=eval_split,
      mean=tuple(config.mean), std=tuple(config.std),
      class_names=names if len(names) == config.num_classes else ())


def write_workdir(directory: str, config, variables: Mapping[str, Any],
                  provenance: Mapping[str, Any], meta=None) -> str:
  """Writes `variables` as a step-0 checkpoint in workdir `directory`, with its config.

  With `meta` (a `data.DatasetMeta`, e.g. `dataset_meta(config)`), also
  DIR/dataset.json.

  Returns:
    The step directory written.

  Raises:
    ConfigError: `directory` exists and is not empty.
  """
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from resnet_jax import workdir  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
    raise ConfigError(f'--output={directory} exists and is not empty; choose a new '
                      'directory (it becomes a workdir with checkpoints/0)')
  state = {'step': np.zeros((), np.int32), 'params': variables['params'],
           'batch_stats': variables.get('batch_stats', {})}
  manager = checkpoint.CheckpointManager(directory)
  try:
    manager.save(0, state, epoch=0.0, metrics={})
  finally:
    manager.close()
  workdir.write_config(config, directory)
  if meta is not None:
    workdir.write_dataset(meta, directory)
  with open(os.path.join(directory, PROVENANCE), 'w', encoding='utf-8') as f:
    json.dump(dict(provenance), f, indent=2, sort_keys=True)
    f.write('\n')
  return manager.step_path(0)


def read_model_config(path: str) -> tuple[str | None, dict[str, Any] | None]:
  """(workdir, `model` section of its config.json) of a checkpoint path; Nones without one."""
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from resnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir = checkpoint.workdir_of(path)
  if workdir is None:
    return None, None
  return workdir, (workdir_lib.read_config(workdir) or {}).get('model')

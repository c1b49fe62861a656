r"""Exports a checkpoint's evaluation function as a serialized `jax.export` artifact.

    python -m resnet_jax.export --checkpoint=runs/c20 --out=c20.jaxexport
    python -m resnet_jax.export --checkpoint=runs/c20 --out=c20_f32.jaxexport --input=float32
    python -m resnet_jax.export --checkpoint=runs/c20 --out=c20_maps.jaxexport \
        --features=stage2,stage3,pooled

The artifact is StableHLO with the weights inside, a symbolic batch dimension
and lowerings for every platform in --platforms (default cpu, cuda, tpu).
Loading and running it needs jax alone (plus flatbuffers, which jax's
serialization imports) -- no flax, no resnet_jax:

    from jax import export
    exp = export.deserialize(open('c20.jaxexport', 'rb').read())
    logits = exp.call(images)  # uint8 [N, H, W, 3] -> float32 [N, num_classes]

--input=uint8 (default): the artifact takes uint8 images of the run's input
size and applies the evaluation's cast and normalisation (the run's mean/std)
itself, exactly as `evaluate` does inside its step. Resizing and cropping
(the run's eval transform, `data.transforms.Transform(..., train=False)`)
stay on the host: the caller hands over images already at H x W.
--input=float32: the artifact takes images already normalised.
--features: the named intermediate outputs (models/features.py) as a dict
instead of the logits; every output is float32.

Beside FILE, FILE.json describes it for whoever serves it: input shape, dtype
and normalisation, the host-side eval transform, outputs, class names,
platforms, the checkpoint and step. An existing FILE is not overwritten
without --overwrite (exit status 2, one line).
"""

import dataclasses
import json
import logging as std_logging
import os
import sys
from typing import Any

from absl import flags
from absl import logging
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS
INPUTS = ('uint8', 'float32')
# Platforms jax (0.10) lowers for from any machine; the artifact runs on each.
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
BATCH_SYMBOL = 'batch'


def define_flags() -> None:
  """export's flags (see cli.run)."""
  flags.DEFINE_string('checkpoint', None,
                      'A workdir, its checkpoints/ directory, or a step directory.')
  flags.DEFINE_string('out', None, 'The artifact to write (FILE, and FILE.json beside it).')
  flags.DEFINE_enum('input', 'uint8', INPUTS,
                    'uint8: images as decoded, normalised inside the artifact; float32: '
                    'images already normalised with the run\'s mean/std.')
  flags.DEFINE_list('features', [],
                    "Export these outputs instead of the logits: 'all' (every feature "
                    "map) or names among stem, stage1, ..., pooled, logits.")
  flags.DEFINE_list('platforms', list(DEFAULT_PLATFORMS),
                    f'Platforms to lower for, among {", ".join(KNOWN_PLATFORMS)}.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
  flags.DEFINE_bool('ema', False, 'Export the EMA of the weights (a run with '
                    '--config.ema_decay) instead of the weights.')
  config_flags.DEFINE_config_file(
      'config', None, 'Config of the run (default: the config.json beside the '
      'checkpoint).', lock_config=True)
  flags.mark_flags_as_required(['checkpoint', 'out'])


class _ReadOnlyNotice(std_logging.Filter):
  """Drops orbax's warning that a checkpoint directory is opened read-only.

  Prediction and export read checkpoints read-only on purpose; the warning
  would be the only line on stderr besides the ones about unreadable images.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (f'{os.sep}orbax{os.sep}' in record.pathname
                and 'read only' in record.getMessage())


def quiet_read_only() -> None:
  """Installs _ReadOnlyNotice on absl's handler (command-line tools that only read)."""
  logging.get_absl_handler().addFilter(_ReadOnlyNotice())


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint ready for inference, read without its dataset.

  Attributes:
    model: the network (models.ResNet).
    variables: {'params', 'batch_stats'} as host arrays.
    image_size: side of the model's square input.
    num_classes: classifier outputs.
    mean, std: the evaluation's normalisation, per channel in [0, 1] units.
    augment, eval_resize: the run's eval transform on the host
      (`data.transforms.Transform(augment, image_size, eval_resize, train=False)`).
    class_names: label i is class_names[i]; () where the run recorded none.
    checkpoint: the step directory read.
    step: its step.
  """
  model: Any
  variables: dict
  image_size: int
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str
  eval_resize: int
  class_names: tuple[str, ...]
  checkpoint: str
  step: int

  def transform(self):
    """The run's evaluation transform (host side): record -> uint8 [size, size, 3]."""
    from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
    return transforms.Transform(self.augment, self.image_size, self.eval_resize,
                                train=False)

  def preprocess(self, images):
    """uint8 images -> what the model takes: the evaluation's cast and normalisation."""
    from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
    return placement.preprocess(images, mean=self.mean, std=self.std)


def restore(path: str, config=None, *, cpu_fast_paths: bool | None = None,
            ema: bool = False) -> Restored:
  """Reads a checkpoint's weights and what evaluating them needs, without the data.

  Args:
    path: a workdir, its checkpoints/ directory, or a step directory.
    config: the run's config; None = the config.json it recorded.
    cpu_fast_paths: override the config's (None: keep it). Export passes
      False so that the artifact holds one formulation for every platform.
    ema: the EMA of the weights (a run with ema_decay) instead of the weights.

  Raises:
    ConfigError: no checkpoint there, no config, or the config and the
      checkpoint's workdir leave the input size, classes or normalisation
      unknown; a checkpoint of another model (arrays named).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax import specs  # pylint: disable=g-import-not-at-top
  from resnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import spec as data_spec  # pylint: disable=g-import-not-at-top

  checkpoint.resolve(path)  # A typo fails before anything is loaded.
  if config is None:
    config = configlib.load_stored(path)
  run = specs.resolve(config.copy_and_resolve_references())
  workdir = checkpoint.workdir_of(path)
  dataset = (workdir_lib.read_dataset(workdir) if workdir else None) or {}
  known = data_spec.KNOWN_SHAPES.get(run.data.dataset, (0, 0))
  image_size = run.data.image_size or (dataset.get('image_shape') or [0])[0] or known[0]
  num_classes = run.data.num_classes or dataset.get('num_classes') or known[1]
  mean, std = run.data.mean, run.data.std
  if not mean and dataset.get('mean'):
    mean, std = tuple(dataset['mean']), tuple(dataset['std'])
  missing = [name for name, value in (('image_size', image_size),
                                      ('num_classes', num_classes), ('mean', mean))
             if not value]
  if missing:
    raise ConfigError(
        f'the config of {path} does not say its {", ".join(missing)} and no dataset.json '
        'beside it does: pass --config=configs/stored.py:WORKDIR with '
        + ' '.join(f'--config.{m}=...' for m in missing))
  names = tuple(dataset.get('class_names') or ())
  if names and len(names) != num_classes:
    names = ()  # Recorded for another head (num_classes set above the data's).
  fast = run.cpu_fast_paths if cpu_fast_paths is None else cpu_fast_paths
  model = models.create_model(run.model, num_classes=int(num_classes), dtype=run.dtype,
                              cpu_fast_paths=fast)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3), jnp.float32),
      train=False))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  params, batch_stats, info = checkpoint.load_weights(
      path, template['params'], template.get('batch_stats', {}), ema=ema)
  variables = {'params': params}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  return Restored(model=model, variables=variables, image_size=int(image_size),
                  num_classes=int(num_classes), mean=tuple(map(float, mean)),
                  std=tuple(map(float, std)), augment=run.data.augment,
                  eval_resize=run.data.eval_resize, class_names=names,
                  checkpoint=info['path'], step=int(info['step']))


def inference_fn(restored: Restored, *, input_dtype: str = 'uint8',
                 features: tuple[str, ...] = ()):
  """images -> float32 logits (or {name: float32 map}) with the weights as constants."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if input_dtype not in INPUTS:
    raise ConfigError(f'input={input_dtype!r}: choose one of {", ".join(INPUTS)}')
  variables = jax.tree.map(jnp.asarray, restored.variables)
  model = restored.model

  def fn(images):
    x = restored.preprocess(images) if input_dtype == 'uint8' else images
    out = model.apply(variables, x, train=False, features=features or None)
    return jax.tree.map(lambda a: a.astype(jnp.float32), out)

  return fn


def select_outputs(restored: Restored, names) -> tuple[str, ...]:
  """The --features flag's names (with 'all' for every feature map), checked."""
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax.models import features as features_lib  # pylint: disable=g-import-not-at-top
  spec = restored.model.spec
  expanded = []
  for name in (n.strip() for n in names):
    expanded += list(models.feature_names(spec)) if name == 'all' else [name] if name else []
  return features_lib.select(spec, expanded) if expanded else ()


def check_platforms(platforms: tuple[str, ...]) -> None:
  """ConfigError unless every platform is one jax.export lowers for."""
  unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
  if unknown or not platforms:
    raise ConfigError(f'platforms={",".join(platforms)}: choose among '
                      f'{", ".join(KNOWN_PLATFORMS)}')


def export_checkpoint(restored: Restored, *, input_dtype: str = 'uint8',
                      features: tuple[str, ...] = (),
                      platforms: tuple[str, ...] = DEFAULT_PLATFORMS):
  """The `jax.export.Exported` of the evaluation function (batch dimension symbolic).

  Raises:
    ConfigError: an unknown platform or input dtype.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export  # pylint: disable=g-import-not-at-top
  check_platforms(platforms)
  fn = inference_fn(restored, input_dtype=input_dtype, features=features)
  batch, = export.symbolic_shape(BATCH_SYMBOL)
  size = restored.image_size
  spec = jax.ShapeDtypeStruct((batch, size, size, 3), input_dtype)
  return export.export(jax.jit(fn), platforms=tuple(platforms))(spec)


def describe(restored: Restored, exported, *, input_dtype: str,
             features: tuple[str, ...]) -> dict[str, Any]:
  """What FILE.json records about the artifact."""
  import jax  # pylint: disable=g-import-not-at-top
  outputs = jax.tree_util.tree_unflatten(
      exported.out_tree, [{'shape': [d if isinstance(d, int) else str(d) for d in a.shape],
                           'dtype': str(a.dtype)}
                          for a in exported.out_avals])
  return {
      'format': 'jax.export (serialized Exported, StableHLO); load with '
                'jax.export.deserialize(bytes).call(images)',
      'jax_version': jax.__version__,
      'platforms': list(exported.platforms),
      'input': {'shape': [BATCH_SYMBOL, restored.image_size, restored.image_size, 3],
                'dtype': input_dtype, 'layout': 'NHWC, RGB',
                'normalisation': ('inside: (x - 255 * mean) / (255 * std)'
                                  if input_dtype == 'uint8' else
                                  'by the caller: (x / 255 - mean) / std'),
                'mean': list(restored.mean), 'std': list(restored.std)},
      'host_transform': {'augment': restored.augment, 'image_size': restored.image_size,
                         'eval_resize': restored.eval_resize,
                         'python': f'resnet_jax.data.transforms.Transform('
                                   f'{restored.augment!r}, {restored.image_size}, '
                                   f'{restored.eval_resize}, train=False)'},
      'outputs': outputs if features else {'logits': outputs},
      'features': list(features),
      'model': restored.model.spec.describe(),
      'num_classes': restored.num_classes,
      'class_names': list(restored.class_names),
      'checkpoint': restored.checkpoint, 'step': restored.step,
  }


def _check_out(path: str, overwrite: bool) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    raise ConfigError(f'--out={path} is a directory; give a file name')
  if not overwrite:
    for existing in (path, path + '.json'):
      if os.path.exists(existing):
        raise ConfigError(f'--out: {existing} exists; pass --overwrite to replace it')
  parent = os.path.dirname(path)
  if not os.path.isdir(parent):
    raise ConfigError(f'--out={path}: directory {parent} does not exist')
  return path


def _write_atomically(path: str, data: bytes) -> None:
  with open(path + '.tmp', 'wb') as f:
    f.write(data)
  os.replace(path + '.tmp', path)


def _serialize(exported) -> bytes:
  try:
    import flatbuffers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError("serializing a jax.export artifact needs flatbuffers: pip install "
                      "-e '.[export]' (or pip install flatbuffers)") from None
  return bytes(exported.serialize())


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  out = _check_out(FLAGS.out, FLAGS.overwrite)
  quiet_read_only()
  platforms = tuple(p.strip() for p in FLAGS.platforms if p.strip())
  check_platforms(platforms)  # Before the checkpoint is read: a typo fails at once.
  restored = restore(FLAGS.checkpoint, FLAGS.config, cpu_fast_paths=False, ema=FLAGS.ema)
  features = select_outputs(restored, FLAGS.features)
  exported = export_checkpoint(restored, input_dtype=FLAGS.input, features=features,
                               platforms=platforms)
  blob = _serialize(exported)
  meta = describe(restored, exported, input_dtype=FLAGS.input, features=features)
  _write_atomically(out, blob)
  _write_atomically(out + '.json', (json.dumps(meta, indent=1) + '\n').encode())
  what = ', '.join(features) if features else f'logits [{BATCH_SYMBOL}, {restored.num_classes}]'
  print(f'{out}: {len(blob):,} bytes, {FLAGS.input} [{BATCH_SYMBOL}, {restored.image_size}, '
        f'{restored.image_size}, 3] -> {what}, platforms {", ".join(exported.platforms)} '
        f'(step {restored.step} of {restored.checkpoint}); {out}.json describes it',
        file=sys.stderr, flush=True)
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)

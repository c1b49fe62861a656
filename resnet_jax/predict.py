r"""Predicts the classes of images with a checkpoint: top-k classes and their names.

    python -m resnet_jax.predict --checkpoint=runs/c20 cat.jpg dog.png photos/
    python -m resnet_jax.predict --checkpoint=runs/tv_resnet50 --top_k=3 --json img.jpg

Each IMAGE is a file PIL reads; a FOLDER is searched recursively for image
files (by extension, in sorted order). Every image goes through the
checkpoint's own evaluation: its run's eval transform on the host
(`data.transforms.Transform(augment, image_size, eval_resize, train=False)`
from the recorded config), then, in the jitted step, the cast and
normalisation with the run's mean/std, in batches of --batch_size (the last
one padded: one compilation).

Output, one line per image on stdout: `IMAGE  NAME PROB  NAME PROB ...` (top
--top_k, most probable first), or with --json one JSON object per image:
{"image", "top_k": [{"label", "name", "probability", "logit"}, ...]}. Class
names come from the run's dataset.json (imported ImageNet weights: the 1,000
ImageNet classes); without them the name is the label number (null in JSON).

An image that cannot be read is one line on stderr naming it, and the others
are still predicted: exit status 0 when at least one image was predicted, 2
when none was (or on bad flags).
"""

import json
import os
import sys
from typing import Iterator

import numpy as np

from absl import flags
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """predict's flags (see cli.run)."""
  flags.DEFINE_string('checkpoint', None,
                      'A workdir, its checkpoints/ directory, or a step directory.')
  flags.DEFINE_integer('top_k', 5, 'Classes per image (at most the number of classes).')
  flags.DEFINE_bool('json', False, 'One JSON object per image instead of a text line.')
  flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
  flags.DEFINE_bool('ema', False, 'Predict with the EMA of the weights (a run with '
                    '--config.ema_decay).')
  config_flags.DEFINE_config_file(
      'config', None, 'Config of the run (default: the config.json beside the '
      'checkpoint).', lock_config=True)
  flags.mark_flags_as_required(['checkpoint'])


def image_files(paths: list[str]) -> Iterator[tuple[str, str | None]]:
  """(path, None) for every image named or under a folder; (path, why) for a bad path."""
  from resnet_jax.data import folder  # pylint: disable=g-import-not-at-top
  for path in paths:
    if os.path.isdir(path):
      found = False
      for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
          if os.path.splitext(name)[1].lower() in folder.IMAGE_EXTENSIONS and (
              not name.startswith('.')):
            found = True
            yield os.path.join(root, name), None
      if not found:
        yield path, 'a folder with no image files (' + ', '.join(
            sorted(folder.IMAGE_EXTENSIONS)) + ')'
    elif os.path.isfile(path):
      yield path, None
    else:
      yield path, 'no such file or folder'


def _read(path: str, transform) -> np.ndarray:
  """The eval transform's uint8 [size, size, 3] of one image file; raises on a bad one."""
  with open(path, 'rb') as f:
    data = f.read()
  return transform((data, 0), None)['image']


def _why(error: Exception) -> str:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(error, Image.UnidentifiedImageError):
    return 'not an image format PIL reads'  # Its message names a BytesIO object.
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def top_k_fn(restored, k: int):
  """Jitted: (variables, uint8 images) -> (top-k probabilities, labels, logits)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def fn(variables, images):
    logits = restored.model.apply(variables, restored.preprocess(images), train=False)
    logits = logits.astype(jnp.float32)
    probabilities, labels = jax.lax.top_k(jax.nn.softmax(logits), k)
    return probabilities, labels, jnp.take_along_axis(logits, labels, axis=1)

  return jax.jit(fn)


def predict(restored, paths: list[str], *, top_k: int = 5, batch_size: int = 64,
            on_error=None) -> Iterator[dict]:
  """Predictions for the images at `paths` (files or folders), in order.

  Args:
    restored: `export.restore(checkpoint)`.
    paths: image files and folders.
    top_k: classes per image.
    batch_size: images per forward pass.
    on_error: called with (path, reason) for every input that cannot be read.

  Yields:
    {'image': path, 'top_k': [{'label', 'name', 'probability', 'logit'}, ...]}.
  """
  if top_k < 1:
    raise ConfigError(f'top_k={top_k} must be at least 1')
  if batch_size < 1:
    raise ConfigError(f'batch_size={batch_size} must be at least 1')
  k = min(top_k, restored.num_classes)
  fn = top_k_fn(restored, k)
  transform = restored.transform()
  names = restored.class_names
  size = restored.image_size

  def run(batch):
    images = np.zeros((batch_size, size, size, 3), np.uint8)  # Padded: one shape.
    images[:len(batch)] = np.stack([image for _, image in batch])
    probabilities, labels, logits = (np.asarray(a) for a in fn(restored.variables, images))
    for i, (path, _) in enumerate(batch):
      yield {'image': path, 'top_k': [
          {'label': int(label), 'name': names[label] if names else None,
           'probability': float(p), 'logit': float(logit)}
          for p, label, logit in zip(probabilities[i], labels[i], logits[i])]}

  batch = []
  for path, problem in image_files(paths):
    if problem is None:
      try:
        batch.append((path, _read(path, transform)))
      except Exception as e:  # pylint: disable=broad-exception-caught
        # PIL raises many types (OSError, SyntaxError, ValueError...) for bad data.
        problem = _why(e)
    if problem is not None and on_error is not None:
      on_error(path, problem)
    if len(batch) == batch_size:
      yield from run(batch)
      batch = []
  if batch:
    yield from run(batch)


def format_line(prediction: dict) -> str:
  """`IMAGE  name 91.20%  name 5.10% ...` for one prediction."""
  return prediction['image'] + ''.join(
      f"  {c['name'] if c['name'] is not None else c['label']} "
      f"{100 * c['probability']:.2f}%" for c in prediction['top_k'])


def main(argv):
  paths = argv[1:]
  if not paths:
    raise ConfigError('name at least one IMAGE or FOLDER to predict, e.g. '
                      'python -m resnet_jax.predict --checkpoint=runs/c20 cat.jpg photos/')
  if FLAGS.top_k < 1 or FLAGS.batch_size < 1:
    raise ConfigError(f'--top_k={FLAGS.top_k} and --batch_size={FLAGS.batch_size} must '
                      'be at least 1')
  from resnet_jax import export  # pylint: disable=g-import-not-at-top
  export.quiet_read_only()
  restored = export.restore(FLAGS.checkpoint, FLAGS.config, ema=FLAGS.ema)
  failed = []

  def on_error(path, reason):
    failed.append(path)
    print(f'error: cannot read {path}: {reason}', file=sys.stderr, flush=True)

  count = 0
  for prediction in predict(restored, paths, top_k=FLAGS.top_k,
                            batch_size=FLAGS.batch_size, on_error=on_error):
    count += 1
    print(json.dumps(prediction) if FLAGS.json else format_line(prediction), flush=True)
  if not count:
    raise ConfigError(f'no image could be predicted ({len(failed)} unreadable)')
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)

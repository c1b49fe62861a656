r"""Input-pipeline throughput: images/s of the data paths, without a model.

    python -m resnet_jax.pipeline_benchmark
    python -m resnet_jax.pipeline_benchmark --only=imagenet --imagenet_images=1000

Benchmarks (each prints one JSON line on stdout; logs go to stderr):

  cifar_prepare      one-time preparation of the CIFAR folder dataset (s)
  cifar_tfdata       the tf.data train pipeline for CIFAR (decode, pad-crop-flip,
                     batch, to the devices) via `data.create_train_iter`; the
                     first epoch decodes and fills the memory cache, later
                     epochs read it: reported separately
  cifar_on_device    on_device_data=True: batches gathered on the device
  imagenet_prepare   preparation of the generated JPEG folder (s)
  imagenet_tfdata    ImageNet-style training input: JPEG decode of the crop
                     window + random resized crop to 224 + flip, cache='none'
  imagenet_eval      eval input: centre crop + resize to 224

CIFAR comes from the CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg-q75.tar.gz
next to the repository) when present, else from generated 32x32 JPEGs. The
ImageNet-style data are generated 500x375 JPEGs (ImageNet's typical size):
smooth random colour fields plus noise, about ImageNet's bytes per image.
Everything is prepared under a temporary --data_dir unless one is given.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from resnet_jax import cli
from resnet_jax import configlib
from resnet_jax import data
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_COPY = os.path.join(REPO, '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')

FLAGS = flags.FLAGS


def define_flags() -> None:
  """pipeline_benchmark's flags (see cli.run)."""
  flags.DEFINE_list('only', ['cifar', 'imagenet'], 'Which benchmarks: cifar, imagenet.')
  flags.DEFINE_string('cifar', '', 'CIFAR source: folder:PATH or a tfds name; '
                      'default: the CIFAR-10 JPEG copy if present, else generated.')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir; default: a temporary one.')
  flags.DEFINE_integer('cifar_batch_size', 128, 'CIFAR global batch.')
  flags.DEFINE_integer('imagenet_batch_size', 64, 'ImageNet global batch.')
  flags.DEFINE_integer('imagenet_images', 640, 'Generated 500x375 JPEGs (train split).')
  flags.DEFINE_integer('steps', 0, 'Timed batches per benchmark (0: defaults).')


def emit(name: str, **fields) -> None:
  print(json.dumps({'benchmark': name, **fields}), flush=True)


def _time_batches(it, n: int) -> float:
  """Seconds for n batches, each waited for on the device."""
  start = time.perf_counter()
  for _ in range(n):
    jax.block_until_ready(next(it))
  return time.perf_counter() - start


def _generate_cifar_like(root: str, per_class: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for split, n in (('train', per_class), ('test', max(1, per_class // 5))):
    for c in range(10):
      os.makedirs(os.path.join(root, split, f'class{c}'))
      for i in range(n):
        img = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, split, f'class{c}', f'{i}.jpg'),
                                  quality=75)


def _generate_imagenet_like(root: str, n_train: int) -> None:
  """500x375 JPEGs: upsampled random colour fields + noise (~110 KB each)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for split, n in (('train', n_train), ('validation', max(8, n_train // 2))):
    for i in range(n):
      cls = f'n{i % 10:08d}'
      os.makedirs(os.path.join(root, split, cls), exist_ok=True)
      field = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)
      img = np.asarray(Image.fromarray(field).resize((500, 375), Image.BICUBIC),
                       np.int16)
      img = np.clip(img + rng.randint(-25, 26, img.shape), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(os.path.join(root, split, cls, f'{i}.jpg'), quality=90)


def _prepare(config, name: str) -> data.DatasetMeta:
  start = time.perf_counter()
  with contextlib.redirect_stdout(sys.stderr):  # tfds prints progress: keep stdout JSON.
    meta = data.prepare(config)
  emit(name, seconds=round(time.perf_counter() - start, 2), dataset=config.dataset,
       num_train=meta.num_train, num_eval=meta.num_eval)
  return meta


def bench_cifar(data_dir: str, tmp: str, steps: int) -> None:
  source = FLAGS.cifar
  if not source:
    if os.path.exists(CIFAR_COPY):
      source = f'folder:{os.path.abspath(CIFAR_COPY)}'
    else:
      root = os.path.join(tmp, 'cifar_like')
      _generate_cifar_like(root, per_class=500)
      source = f'folder:{root}'
  config = configlib.load(os.path.join(REPO, 'configs', 'cifar10.py'), {
      'dataset': source, 'data_dir': data_dir, 'batch_size': FLAGS.cifar_batch_size})
  meta = _prepare(config, 'cifar_prepare')
  spe = data.steps_per_epoch(config, meta)
  it = data.create_train_iter(config, meta)
  first = _time_batches(it, spe)  # Decodes every image and fills the cache.
  emit('cifar_tfdata', phase='first_epoch', images_per_sec=round(
      spe * config.batch_size / first, 1), batch_size=config.batch_size, batches=spe,
       dataset=source)
  n = min(steps or spe, spe)
  cached = _time_batches(it, n)
  emit('cifar_tfdata', phase='cached', images_per_sec=round(
      n * config.batch_size / cached, 1), batch_size=config.batch_size, batches=n,
       dataset=source)

  config.on_device_data = True
  it = data.create_train_iter(config, meta)
  jax.block_until_ready(next(it))  # Loads the shard, compiles the gather.
  n = steps or 500
  seconds = _time_batches(it, n)
  emit('cifar_on_device', images_per_sec=round(n * config.batch_size / seconds, 1),
       batch_size=config.batch_size, batches=n, dataset=source)


def bench_imagenet(data_dir: str, tmp: str, steps: int) -> None:
  root = os.path.join(tmp, 'imagenet_like')
  start = time.perf_counter()
  _generate_imagenet_like(root, FLAGS.imagenet_images)
  sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs]
  logging.info('generated %d JPEGs (mean %.0f KB) in %.1f s', len(sizes),
               np.mean(sizes) / 1024, time.perf_counter() - start)
  config = configlib.load(os.path.join(REPO, 'configs', 'r50.py'), {
      'dataset': f'folder:{root}', 'data_dir': data_dir,
      'batch_size': FLAGS.imagenet_batch_size, 'shuffle_buffer_size': 1024})
  meta = _prepare(config, 'imagenet_prepare')
  it = data.create_train_iter(config, meta)
  jax.block_until_ready(next(it))  # Start-up: TF graph building, first reads.
  # Two epochs minus the first batch: includes an epoch change, as in training.
  n = steps or max(1, 2 * data.steps_per_epoch(config, meta) - 1)
  seconds = _time_batches(it, n)
  emit('imagenet_tfdata', images_per_sec=round(n * config.batch_size / seconds, 1),
       batch_size=config.batch_size, batches=n, image_size=meta.image_shape[0],
       source_jpeg='500x375', mean_jpeg_kb=round(float(np.mean(sizes)) / 1024, 1))
  it = data.create_eval_iter(config, meta)
  batch = next(it)  # Start-up excluded, as above.
  jax.block_until_ready(batch)
  first = int(np.asarray(batch['mask']).sum())
  start = time.perf_counter()
  count = 0
  for batch in it:
    jax.block_until_ready(batch)
    count += int(np.asarray(batch['mask']).sum())
  emit('imagenet_eval', images_per_sec=round(count / (time.perf_counter() - start), 1),
       batch_size=config.batch_size, examples=count + first,
       image_size=meta.image_shape[0])


def main(argv):
  if len(argv) > 1:
    raise flags.Error(f'unexpected arguments: {" ".join(argv[1:])}')
  unknown = set(FLAGS.only) - {'cifar', 'imagenet'}
  if unknown:
    raise ConfigError(f'--only: unknown benchmarks {sorted(unknown)}; '
                                'valid: cifar, imagenet')
  tmp = tempfile.mkdtemp(prefix='pipeline_benchmark_')
  data_dir = FLAGS.data_dir or os.path.join(tmp, 'tfds')
  emit('host', cpu_count=os.cpu_count(), devices=[str(d) for d in jax.local_devices()])
  try:
    if 'cifar' in FLAGS.only:
      bench_cifar(data_dir, tmp, FLAGS.steps)
    if 'imagenet' in FLAGS.only:
      bench_imagenet(data_dir, tmp, FLAGS.steps)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)

r"""Input-pipeline throughput, side by side: this pipeline, a baseline commit's, PyTorch's.

    python -m resnet_jax.pipeline_benchmark
    python -m resnet_jax.pipeline_benchmark --only=imagenet_train --workers=1,2 \
        --peer_python=benchmarks/peer/.venv/bin/python --baseline_commit=6f8df73

Every variant runs in its own process on the same files and cores, one after
the other, and the whole set is repeated `--rounds` times (interleaved, so a
machine that gets busier slows every variant alike); each measures steady
state: `--warmup_batches` batches, then `--images` images timed. Variants:

  resnet_jax   this checkout's pipeline (`data.open_input`: grain workers,
               batches put on the devices), for each of --workers
  baseline     --baseline_commit's pipeline, the same way (its own code, in a
               temporary git worktree; its tf.data path for ImageNet)
  pytorch      torch DataLoader + torchvision transforms with --workers worker
               processes (benchmarks/peer/input_pipeline.py, in --peer_python)

Benchmarks (--only):

  imagenet_train  generated 500x375 JPEGs (~80 KB, ImageNet's typical size):
                  decode + random resized crop to 224 + flip, uint8
  imagenet_eval   the same JPEGs: resize 256 + centre crop 224
  cifar           the CIFAR-10 JPEG copy (../shared/data) when present, else
                  generated 32x32 JPEGs, decoded once (an index of arrays):
                  pad-crop-flip, streamed from the host

Prints one JSON line per measurement (stdout) and a summary line per
benchmark and variant: median images/s over the rounds and per core
(os.cpu_count()). Logs go to stderr. No TensorFlow is imported by this
module or by the resnet_jax variant.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags
import numpy as np

from resnet_jax import cli
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_COPY = os.path.join(REPO, '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')
KINDS = ('imagenet_train', 'imagenet_eval', 'cifar')

FLAGS = flags.FLAGS


def define_flags() -> None:
  """pipeline_benchmark's flags (see cli.run)."""
  flags.DEFINE_list('only', list(KINDS), f'Benchmarks: {", ".join(KINDS)}.')
  flags.DEFINE_list('workers', ['2'], 'Worker processes to try (each a variant).')
  flags.DEFINE_integer('images', 6400, 'Images timed per measurement (steady state).')
  flags.DEFINE_integer('warmup_batches', 10, 'Batches before the clock starts.')
  flags.DEFINE_integer('batch_size', 64, 'Batch size (CIFAR: twice this).')
  flags.DEFINE_integer('rounds', 2, 'Times the whole set of variants is repeated.')
  flags.DEFINE_integer('imagenet_images', 640, 'Generated 500x375 JPEGs (train split).')
  flags.DEFINE_string('peer_python', '', 'Python of the PyTorch peer venv '
                      '(benchmarks/peer/setup.sh); empty: no PyTorch variant.')
  flags.DEFINE_string('baseline_commit', '', 'A git revision whose pipeline to time '
                      'too; empty: none.')
  flags.DEFINE_string('measure', '', 'Internal: measure one variant in this process.')
  flags.DEFINE_string('kind', '', 'Internal: the benchmark of --measure.')
  flags.DEFINE_string('source', '', 'Internal: the dataset of --measure.')
  flags.DEFINE_string('data_dir', '', 'Internal: the index directory of --measure.')


def emit(name: str, **fields) -> None:
  print(json.dumps({'benchmark': name, **fields}), flush=True)


def generate_imagenet_like(root: str, n_train: int) -> None:
  """500x375 JPEGs: upsampled random colour fields + noise (~80 KB each)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for split, n in (('train', n_train), ('validation', max(8, n_train // 2))):
    for i in range(n):
      cls = f'n{i % 10:08d}'
      os.makedirs(os.path.join(root, split, cls), exist_ok=True)
      field = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)
      img = np.asarray(Image.fromarray(field).resize((500, 375), Image.BICUBIC), np.int16)
      img = np.clip(img + rng.randint(-25, 26, img.shape), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(os.path.join(root, split, cls, f'{i}.jpg'), quality=90)


def generate_cifar_like(root: str, per_class: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for split, n in (('train', per_class), ('test', max(1, per_class // 5))):
    for c in range(10):
      os.makedirs(os.path.join(root, split, f'class{c}'))
      for i in range(n):
        Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(
            os.path.join(root, split, f'class{c}', f'{i}.jpg'), quality=75)


# --- One measurement, in its own process ---------------------------------------

def _config(kind: str, source: str, data_dir: str, workers: int):
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  batch = FLAGS.batch_size * (2 if kind == 'cifar' else 1)
  overrides = {'dataset': f'folder:{source}', 'data_dir': data_dir, 'batch_size': batch,
               'download': False}
  if workers >= 0:
    overrides['num_workers'] = workers
  if kind != 'cifar':
    overrides['eval_resize'] = 256
  path = 'configs/cifar10.py' if kind == 'cifar' else 'configs/r50.py'
  # The configs of the tree measured (the baseline's own, in its worktree).
  return configlib.load(os.path.join(os.getcwd(), path), overrides), batch


def _time(batches, batch_size: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(FLAGS.warmup_batches):
    jax.block_until_ready(next(batches))
  n = max(1, FLAGS.images // batch_size)
  start = time.perf_counter()
  for _ in range(n):
    jax.block_until_ready(next(batches))
  return n * batch_size / (time.perf_counter() - start)


def measure_resnet_jax(kind: str, source: str, data_dir: str, workers: int) -> float:
  """images/s of this checkout's pipeline (placement 'host', batches on the devices).

  Evaluation's steady state: the eval transform over the validation split
  streamed endlessly (one pass of the small generated split would time the
  start of the worker processes more than the transform).
  """
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import loader  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import transforms  # pylint: disable=g-import-not-at-top
  config, batch = _config(kind, source, data_dir, workers)
  config.placement = 'host'
  inputs = data.open_input(data.resolve(config))
  mesh = parallel.make_mesh()
  if kind == 'imagenet_eval':
    spec, source = inputs.spec, inputs.dataset.eval
    transform = transforms.Transform(spec.augment, inputs.meta.image_shape[0],
                                     spec.eval_resize, train=False)
    host = loader.train_batches(source, transform, seed=0,
                                steps_per_epoch=len(source) // batch,
                                layout=loader.Layout(batch, 0, 1), workers=spec.workers)
    return _time(placement.stream(host, mesh, spec.prefetch), batch)
  return _time(inputs.train_batches(mesh), batch)


def measure_baseline(kind: str, source: str, data_dir: str) -> float:
  """images/s of a commit before this pipeline (tf.data; its own API), in its tree.

  Its evaluation: whole passes over the validation split (tf.data has no
  worker processes to start).
  """
  import itertools  # pylint: disable=g-import-not-at-top
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  config, batch = _config(kind, source, data_dir, -1)
  with config.unlocked():
    if kind != 'cifar':
      config.shuffle_buffer_size = 1024
  meta = data.prepare(config)
  if kind == 'imagenet_eval':
    batches = itertools.chain.from_iterable(
        data.create_eval_iter(config, meta) for _ in itertools.count())
    return _time(batches, batch)
  return _time(data.create_train_iter(config, meta), batch)


# --- The driver ----------------------------------------------------------------

def _run(command: list[str], cwd: str, env: dict | None = None) -> dict | None:
  result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
  lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
  if result.returncode or not lines:
    tail = ' | '.join(result.stderr.strip().splitlines()[-3:])
    print(f'variant failed ({result.returncode}): {" ".join(command)}: {tail}',
          file=sys.stderr, flush=True)
    return None
  return json.loads(lines[-1])


def _baseline_tree(commit: str, tmp: str) -> str:
  tree = os.path.join(tmp, 'baseline')
  subprocess.run(['git', 'worktree', 'add', '--detach', '-f', tree, commit], cwd=REPO,
                 check=True, capture_output=True)
  return tree


def _cifar_arrays(data_dir: str) -> str:
  """The decoded CIFAR train images of the index (for the PyTorch variant)."""
  for root, _, files in os.walk(data_dir):
    if 'train.images.npy' in files:
      return os.path.join(root, 'train.images.npy')
  raise FileNotFoundError(f'no train.images.npy under {data_dir}')


def drive(tmp: str) -> None:
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  sources = {}
  if {'imagenet_train', 'imagenet_eval'} & set(FLAGS.only):
    root = os.path.join(tmp, 'imagenet_like')
    generate_imagenet_like(root, FLAGS.imagenet_images)
    sources['imagenet'] = root
  if 'cifar' in FLAGS.only:
    if os.path.exists(CIFAR_COPY):
      sources['cifar'] = os.path.abspath(CIFAR_COPY)
    else:
      sources['cifar'] = os.path.join(tmp, 'cifar_like')
      generate_cifar_like(sources['cifar'], per_class=500)
  data_dir = os.path.join(tmp, 'data')
  for name, source in sources.items():  # Index once, outside the timings.
    start = time.perf_counter()
    config, _ = _config('cifar' if name == 'cifar' else 'imagenet_train', source,
                        data_dir, 0)
    data.open_input(data.resolve(config))
    emit('index', dataset=name, seconds=round(time.perf_counter() - start, 2))
  baseline = _baseline_tree(FLAGS.baseline_commit, tmp) if FLAGS.baseline_commit else ''
  me = [sys.executable, '-m', 'resnet_jax.pipeline_benchmark']
  results = {}
  for round_ in range(FLAGS.rounds):
    for kind in FLAGS.only:
      source = sources['cifar' if kind == 'cifar' else 'imagenet']
      common = [f'--kind={kind}', f'--source={source}', f'--images={FLAGS.images}',
                f'--warmup_batches={FLAGS.warmup_batches}',
                f'--batch_size={FLAGS.batch_size}']
      variants = [(f'resnet_jax/{w}', me + [f'--measure=resnet_jax/{w}',
                                            f'--data_dir={data_dir}'] + common, REPO)
                  for w in FLAGS.workers]
      if baseline:
        # This module's measuring code over the baseline's package (its own
        # folder preparation, in its own data_dir).
        variants.append(('baseline', [sys.executable, os.path.abspath(__file__),
                                      '--measure=baseline', '--data_dir=' + os.path.join(
                                          tmp, 'baseline_data')] + common, baseline))
      if FLAGS.peer_python:
        peer_root = (_cifar_arrays(data_dir) if kind == 'cifar' else os.path.join(
            source, 'validation' if kind == 'imagenet_eval' else 'train'))
        for w in FLAGS.workers:
          variants.append((f'pytorch/{w}', [
              FLAGS.peer_python, os.path.join(REPO, 'benchmarks', 'peer', 'input_pipeline.py'),
              f'--kind={kind}', f'--root={peer_root}', f'--workers={w}',
              f'--images={FLAGS.images}', f'--warmup_batches={FLAGS.warmup_batches}',
              f'--batch_size={FLAGS.batch_size * (2 if kind == "cifar" else 1)}'], REPO))
      for name, command, cwd in variants:
        env = dict(os.environ, PYTHONPATH=cwd) if name == 'baseline' else None
        row = _run(command, cwd, env)
        if row is None:
          continue
        results.setdefault((kind, name), []).append(row['images_per_sec'])
        emit(kind, variant=name, round=round_, images_per_sec=round(row['images_per_sec'], 1))
  cores = os.cpu_count() or 1
  for (kind, name), values in results.items():
    median = statistics.median(values)
    emit(kind, variant=name, summary=True, images_per_sec=round(median, 1),
         images_per_sec_per_core=round(median / cores, 1), cores=cores,
         rounds=[round(v, 1) for v in values])
  if baseline:
    subprocess.run(['git', 'worktree', 'remove', '--force', baseline], cwd=REPO,
                   capture_output=True)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  unknown = set(FLAGS.only) - set(KINDS)
  if unknown:
    raise ConfigError(f'--only: unknown benchmarks {sorted(unknown)}; valid: {KINDS}')
  if FLAGS.measure:
    if FLAGS.measure == 'baseline':
      value = measure_baseline(FLAGS.kind, FLAGS.source, FLAGS.data_dir)
    else:
      workers = int(FLAGS.measure.split('/')[1])
      value = measure_resnet_jax(FLAGS.kind, FLAGS.source, FLAGS.data_dir, workers)
    print(json.dumps({'images_per_sec': value}), flush=True)
    return 0
  tmp = tempfile.mkdtemp(prefix='pipeline_benchmark_')
  emit('host', cpu_count=os.cpu_count())
  try:
    drive(tmp)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)

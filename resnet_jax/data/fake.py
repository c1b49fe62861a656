"""dataset='fake': random uint8 images generated on the devices.

For speed runs: no host input work, no host-to-device traffic, no TensorFlow.
A few distinct batches are generated once (directly as global arrays sharded
over the mesh) and cycled, so every step costs the same. Labels are random, so
losses and accuracies mean nothing.
"""

import functools
import itertools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import parallel
from resnet_jax.data import devices
from resnet_jax.data import meta as meta_lib

# CIFAR-10-sized splits: makes `steps_per_epoch` and epoch-based schedules
# behave as for a real run of that size.
NUM_TRAIN = 50_000
NUM_EVAL = 10_000
DEFAULT_CLASSES = 1000
NUM_DISTINCT_BATCHES = 4


def dataset_meta(config) -> meta_lib.DatasetMeta:
  size = config.image_size or meta_lib.IMAGENET_SIZE
  return meta_lib.DatasetMeta(
      num_classes=config.num_classes or DEFAULT_CLASSES,
      image_shape=(size, size, 3), num_train=NUM_TRAIN, num_eval=NUM_EVAL,
      train_split='train', eval_split='test', name=meta_lib.FAKE)


def _generate(seed: int, meta: meta_lib.DatasetMeta, global_size: int, count: int,
              mesh) -> list[dict]:
  """`count` global batches generated on the devices, sharded over the mesh."""
  h, w, c = meta.image_shape

  @functools.partial(jax.jit, out_shardings=parallel.data_sharding(mesh))
  def make(key):
    k_img, k_lbl = jax.random.split(key)
    return {
        'image': jax.random.bits(k_img, (global_size, h, w, c), jnp.uint8),
        'label': jax.random.randint(k_lbl, (global_size,), 0, meta.num_classes,
                                    jnp.int32),
    }

  base = jax.random.key(seed)
  return [make(jax.random.fold_in(base, i)) for i in range(count)]


def create_train_iter(config, meta: meta_lib.DatasetMeta, mesh, *,
                      start_step: int = 0) -> Iterator[dict]:
  layout = parallel.train_layout(config)
  batches = _generate(config.seed, meta, layout.global_size, NUM_DISTINCT_BATCHES, mesh)
  # Batch i is the one an uninterrupted run shows at step i.
  shift = start_step % len(batches)
  return itertools.cycle(batches[shift:] + batches[:shift])


def create_eval_iter(config, meta: meta_lib.DatasetMeta, mesh) -> Iterator[dict]:
  layout = parallel.eval_layout(config)
  num_batches = devices.num_eval_batches(config, meta.num_eval, layout)
  batches = _generate(config.seed + 1, meta, layout.global_size,
                      min(num_batches, NUM_DISTINCT_BATCHES), mesh)
  # The last global batch is partial: mask its padding like a real split.
  for i in range(num_batches):
    batch = dict(batches[i % len(batches)])
    first = i * layout.global_size + parallel.process_index() * layout.per_process
    valid = np.arange(layout.per_process) + first < meta.num_eval
    batch['mask'] = parallel.shard_batch(valid, mesh)
    yield batch

"""config.on_device_data: the whole train split resident on every device.

For datasets that fit in accelerator memory (CIFAR: 150 MB as uint8). The
train split is decoded once on every process and a copy kept on each device;
each epoch one permutation of the whole split is drawn with jax.random from
(seed, epoch), and each step every device gathers its rows of the global batch
(`perm[step * B + its offset :][:per_device]`, a per-device program under
jax.shard_map), so the batch comes out as a global array sharded like every
other input path's. The host only sends a few integers per step, so it is
never the bottleneck. The random crop and flip are applied inside the jitted
step by `device_preprocess`.

What a step trains on depends on (seed, step) alone, not on how many
processes or devices share the batch: 2 processes of 4 devices see exactly the
batches of 1 process of 8 (tested). (The tf.data path reads a shard per
process instead: there the batch composition depends on the process count.)
Epoch and resume semantics match the tf.data path: step s is batch
s % steps_per_epoch of epoch s // steps_per_epoch, whatever the start step.

Evaluation reads this process's part of the eval split (each example on
exactly one process), padded and masked.
"""

import functools
from typing import Iterator

import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from resnet_jax import parallel
from resnet_jax.data import devices
from resnet_jax.data import meta as meta_lib
from resnet_jax.data import sources

# Decoded splits, kept for the next iterator (evaluation runs many times).
_MEMO = {}


def _load(config, meta: meta_lib.DatasetMeta, *, train: bool) -> dict:
  """The whole train split, or this process's part of the eval split (numpy)."""
  from resnet_jax.data import pil_folder  # pylint: disable=g-import-not-at-top
  if pil_folder.use_pil(config):  # Where TensorFlow is absent: PIL, same arrays.
    split = meta.train_split if train else meta.eval_split
    index, count = (0, 1) if train else (parallel.process_index(), parallel.process_count())
    key = (pil_folder.prepare(config).directory, split, index, count)
    if key not in _MEMO:
      _MEMO[key] = pil_folder.load_split(config, split, process_index=index,
                                         process_count=count, train=train)
    return _MEMO[key]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = sources.prepared_builder(config, allow_download=False)
  if train:
    split = meta.train_split
  else:
    split = tfds.even_splits(meta.eval_split, n=parallel.process_count(),
                             drop_remainder=False)[parallel.process_index()]
  key = (str(builder.data_dir), str(split))
  if key not in _MEMO:
    _MEMO[key] = sources.load_numpy(builder, split)
  return _MEMO[key]


def _offsets(mesh, global_batch: int) -> jax.Array:
  """[devices] int32, sharded: the first row of the global batch on each device."""
  sharding = parallel.data_sharding(mesh)
  rows = sharding.addressable_devices_indices_map((global_batch,))
  shards = [jax.device_put(np.array([rows[d][0].start or 0], np.int32), d)
            for d in parallel.local_mesh_devices(mesh)]
  return jax.make_array_from_single_device_arrays((mesh.devices.size,), sharding, shards)


@functools.cache
def _programs(mesh, n: int, per_device: int):
  """(permute, gather) for this mesh and split size."""
  replicated, data = P(), P(parallel.DATA_AXES)

  def gather(images, labels, perm, offset, start):  # Per device.
    idx = jax.lax.dynamic_slice(perm, (start + offset[0],), (per_device,))
    return {'image': images[idx], 'label': labels[idx]}

  permute = jax.jit(lambda key: jax.random.permutation(key, n),
                    out_shardings=parallel.replicated(mesh))
  gather = jax.jit(jax.shard_map(
      gather, mesh=mesh, in_specs=(replicated,) * 3 + (data, replicated), out_specs=data))
  return permute, gather


def create_train_iter(config, meta: meta_lib.DatasetMeta, mesh, *,
                      start_step: int = 0) -> Iterator[dict]:
  """Endless batches gathered on the devices from the resident split."""
  layout = parallel.train_layout(config)
  split = _load(config, meta, train=True)
  n = len(split['label'])
  images = parallel.replicate(split['image'], mesh)
  labels = parallel.replicate(split['label'], mesh)
  steps = meta_lib.steps_per_epoch(config, meta)
  offsets = _offsets(mesh, layout.global_size)
  permute, gather = _programs(mesh, n, layout.per_device)
  base = jax.random.key(config.seed)
  epoch, skip = divmod(start_step, steps)
  while True:
    perm = permute(jax.random.fold_in(base, epoch))
    for step in range(skip, steps):
      yield gather(images, labels, perm, offsets, np.int32(step * layout.global_size))
    epoch, skip = epoch + 1, 0


def _padded(x: np.ndarray, total: int) -> np.ndarray:
  out = np.zeros((total, *x.shape[1:]), x.dtype)
  out[:min(len(x), total)] = x[:total]
  return out


def create_eval_iter(config, meta: meta_lib.DatasetMeta, mesh) -> Iterator[dict]:
  """This process's eval shard in padded, masked batches."""
  layout = parallel.eval_layout(config)
  num_batches = devices.num_eval_batches(config, meta.num_eval, layout)
  shard = _load(config, meta, train=False)
  total = num_batches * layout.per_process
  padded = {
      'image': _padded(shard['image'], total),
      'label': _padded(shard['label'], total),
      'mask': np.arange(total) < len(shard['label']),
  }
  for i in range(num_batches):
    yield parallel.shard_batch(
        {k: v[i * layout.per_process:(i + 1) * layout.per_process]
         for k, v in padded.items()}, mesh)

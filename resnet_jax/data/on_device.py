"""config.on_device_data: the whole train shard resident on every local device.

For datasets that fit in accelerator memory (CIFAR: 150 MB as uint8). This
process's shard of the train split is decoded once and copied to each local
device; each epoch a permutation is drawn with jax.random from (seed, epoch)
on the devices, and each step gathers its batch there. The host only sends
a few integers per step, so it is never the bottleneck. The random crop and
flip are applied inside the jitted step by `device_preprocess`.

Epoch and resume semantics match the tf.data path: step s is batch
s % steps_per_epoch of epoch s // steps_per_epoch, whatever the start step.
"""

import functools
from typing import Iterator

import jax
import numpy as np

from resnet_jax.data import devices
from resnet_jax.data import meta as meta_lib
from resnet_jax.data import sources

# Decoded shards, kept for the next iterator (evaluation runs many times).
_MEMO = {}


def _load(config, meta: meta_lib.DatasetMeta, *, train: bool) -> dict:
  """This process's shard of the train or eval split, as numpy arrays."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = sources.prepared_builder(config, allow_download=False)
  if train:
    split = tfds.split_for_jax_process(
        meta.train_split, process_index=devices.process_index(),
        process_count=devices.process_count(), drop_remainder=True)
  else:
    split = tfds.even_splits(meta.eval_split, n=devices.process_count(),
                             drop_remainder=False)[devices.process_index()]
  key = (str(builder.data_dir), str(split))
  if key not in _MEMO:
    _MEMO[key] = sources.load_numpy(builder, split)
  return _MEMO[key]


def _replicate(x: np.ndarray) -> jax.Array:
  """[n, ...] host array -> [local_devices, n, ...], one full copy per device.

  Built device by device, so the host never holds the stacked copies.
  """
  local = devices.local_devices()
  sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(local), ('batch',)),
      jax.sharding.PartitionSpec('batch'))
  shards = [jax.device_put(x[None], d) for d in local]
  return jax.make_array_from_single_device_arrays(
      (len(local), *x.shape), sharding, shards)


def _permute(key_data, n):
  return jax.random.permutation(jax.random.wrap_key_data(key_data), n)


def _gather(images, labels, perm, start, per_device):
  idx = jax.lax.dynamic_slice(perm, (start,), (per_device,))
  return {'image': images[idx], 'label': labels[idx]}


@functools.cache
def _pmapped(fn, static: tuple[int, ...], local: tuple):
  # Explicit devices: the same ones `devices.local_devices()` laid data on.
  return jax.pmap(fn, static_broadcasted_argnums=static, devices=list(local))


def create_train_iter(config, meta: meta_lib.DatasetMeta, *,
                      start_step: int = 0) -> Iterator[dict]:
  """Endless batches gathered on the devices from the resident shard."""
  layout = devices.train_layout(config)
  data = _load(config, meta, train=True)
  n = len(data['label'])
  images, labels = _replicate(data['image']), _replicate(data['label'])
  steps = meta.num_train // config.batch_size
  base = jax.random.fold_in(jax.random.key(config.seed), devices.process_index())
  # Device d's slice of the process batch starts at d * per_device.
  offsets = np.arange(layout.num_local_devices, dtype=np.int32) * layout.per_device
  local = tuple(devices.local_devices())
  permute, gather = _pmapped(_permute, (1,), local), _pmapped(_gather, (4,), local)
  epoch, skip = divmod(start_step, steps)
  while True:
    # Every device draws the same permutation from the same key.
    key_data = jax.random.key_data(jax.random.fold_in(base, epoch))
    perm = permute(np.broadcast_to(key_data, (layout.num_local_devices,
                                               *key_data.shape)), n)
    for step in range(skip, steps):
      yield gather(images, labels, perm, offsets + step * layout.per_process,
                    layout.per_device)
    epoch, skip = epoch + 1, 0


def _padded(x: np.ndarray, total: int) -> np.ndarray:
  out = np.zeros((total, *x.shape[1:]), x.dtype)
  out[:min(len(x), total)] = x[:total]
  return out


def create_eval_iter(config, meta: meta_lib.DatasetMeta) -> Iterator[dict]:
  """This process's eval shard in padded, masked batches."""
  layout = devices.eval_layout(config)
  num_batches = devices.num_eval_batches(config, meta.num_eval, layout)
  data = _load(config, meta, train=False)
  total = num_batches * layout.per_process
  padded = {
      'image': _padded(data['image'], total),
      'label': _padded(data['label'], total),
      'mask': np.arange(total) < len(data['label']),
  }
  for i in range(num_batches):
    batch = {k: v[i * layout.per_process:(i + 1) * layout.per_process]
             for k, v in padded.items()}
    yield devices.to_devices(
        {k: v.reshape(*layout.shape, *v.shape[1:]) for k, v in batch.items()})

"""Batches onto the mesh, and the preprocessing that runs inside the step.

Training data are streamed (`stream`) or resident (`resident`: the whole train
split on every device, the epoch's order sent as a few integers, the step crops
and flips: the host does nothing per step); evaluation is streamed. `preprocess`
casts and normalises on the device: host batches stay uint8, a quarter of float32's bytes.
"""

import collections
import functools
import itertools
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from resnet_jax import parallel
from resnet_jax.data import transforms


def stream(batches: Iterable[Any], mesh, prefetch: int) -> Iterator[Any]:
  """Host batches (this process's rows) -> global arrays sharded over the mesh's data axes,
  `prefetch` in flight so that the transfer overlaps the step."""
  queue = collections.deque()
  batches = iter(batches)
  try:
    while True:
      for batch in itertools.islice(batches, max(1, prefetch) - len(queue)):
        queue.append(parallel.shard_batch(batch, mesh))
      if not queue:
        return
      yield queue.popleft()
  finally:
    getattr(batches, 'close', lambda: None)()


@functools.cache
def _gather(mesh, per_device: int):
  def gather(images, labels, order, start):  # Per device: its rows of the batch.
    first = start + jax.lax.axis_index(parallel.DATA_AXES) * per_device
    rows = jax.lax.dynamic_slice(order, (first,), (per_device,))
    return {'image': images[rows], 'label': labels[rows]}

  return jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=(P(),) * 4,
                               out_specs=P(parallel.DATA_AXES)))


def resident(arrays: tuple[np.ndarray, np.ndarray], epoch_order, *, mesh,
             steps_per_epoch: int, global_batch: int, start_step: int = 0
             ) -> Iterator[dict]:
  """Endless training batches gathered on the devices from the resident split.

  `arrays` (images uint8 [M, H, W, C], labels int32 [M]): example i of the
  source is row i % M (M is less than the split only for periodic sources);
  `epoch_order(e)`: epoch e's example indices in order (the loader's).
  """
  images, labels = (parallel.replicate(a, mesh) for a in arrays)
  gather = _gather(mesh, global_batch // mesh.devices.size)
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    order = parallel.replicate((np.asarray(epoch_order(epoch)) % len(arrays[1])
                                ).astype(np.int32), mesh)
    for step in range(skip, steps_per_epoch):
      yield gather(images, labels, order, np.int32(step * global_batch))
    epoch, skip = epoch + 1, 0


def crop_flip(images: jax.Array, keys: jax.Array, pad: int = transforms.CIFAR_PAD
              ) -> jax.Array:
  """`transforms.cifar_train` on the device: pad, crop, flip; each example its own key."""
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(image, key):
    k_crop, k_flip = jax.random.split(key)
    top, left = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1)
    crop = jax.lax.dynamic_slice(image, (top, left, 0), (h, w, c))
    return jnp.where(jax.random.bernoulli(k_flip), crop[:, ::-1], crop)

  return jax.vmap(one)(padded, keys)


def preprocess(images: jax.Array, *, mean, std, augment_key: jax.Array | None = None,
               first_row: jax.Array | int = 0) -> jax.Array:
  """uint8 [N, H, W, C] -> float32 (x - mean) / std (statistics in [0, 1] units).

  With `augment_key` (resident training data), row r of the global batch
  (images[0] is row `first_row`) is first cropped and flipped with
  fold_in(augment_key, r): the same on any number of devices.
  """
  if augment_key is not None:
    rows = first_row + jnp.arange(images.shape[0])
    keys = jax.vmap(lambda r: jax.random.fold_in(augment_key, r))(rows)
    images = crop_flip(images, keys)
  mean = np.asarray(mean, np.float32) * 255
  std = np.asarray(std, np.float32) * 255
  return (images.astype(jnp.float32) - mean) / std

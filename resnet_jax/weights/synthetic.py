"""Seeded random state dicts: weights to check a mapping with, without storing any.

`random_state_dict(shapes, seed)` gives the same arrays for the same keys and
shapes on every machine (numpy's PCG64, one stream per key), whatever the key
order, so a fixture can hold PyTorch's logits for "the weights of seed 0" and
a test without PyTorch regenerates those weights from the key table alone.

The values are chosen so that every tensor matters: He-scaled conv weights,
norm scales in [0.2, 1], biases and BatchNorm running means around 0, running
variances in [0.5, 2] (random statistics, not the identity, so that a
statistic that is dropped or swapped changes the logits).
"""

import zlib
from typing import Mapping

import numpy as np


def _rng(seed: int, key: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(key.encode('utf-8'))])


def random_tensor(key: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
  """The value of one state-dict entry (float32; int64 0 for num_batches_tracked)."""
  rng = _rng(seed, key)
  leaf = key.rsplit('.', 1)[-1]
  if leaf == 'num_batches_tracked':
    return np.zeros(shape, np.int64)
  if leaf == 'running_mean':
    x = rng.normal(0.0, 0.2, shape)
  elif leaf == 'running_var':
    x = rng.uniform(0.5, 2.0, shape)
  elif leaf == 'bias':
    x = rng.normal(0.0, 0.1, shape)
  elif len(shape) == 1:  # A norm's scale.
    x = rng.uniform(0.2, 1.0, shape)
  else:  # Conv (out, in, kh, kw) or Linear (out, in): He normal over fan-in.
    fan_in = int(np.prod(shape[1:]))
    x = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
  return x.astype(np.float32)


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int = 0,
                      ) -> dict[str, np.ndarray]:
  """{key: random_tensor(key, shape, seed)} for a key table {key: shape}."""
  return {k: random_tensor(k, tuple(s), seed) for k, s in shapes.items()}


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  """Normalised-looking float32 images NHWC, standard normal (transpose for NCHW)."""
  return np.random.default_rng([seed, 1]).normal(0.0, 1.0, (n, size, size, 3)).astype(
      np.float32)

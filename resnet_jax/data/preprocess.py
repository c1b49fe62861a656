"""Pure-JAX preprocessing that runs inside the train step, on each device.

Host pipelines ship uint8 images (a quarter of the float32 bytes); the step
casts and normalises them here. With `config.on_device_data` the random
crop + flip of the 'cifar' augmentation also happens here, with exactly the
semantics of the tf.data version in `tf_augment.py`: zero-pad 4 pixels of the
uint8 image, crop a window at a uniform offset in [0, 8]^2, flip left-right
with probability 1/2.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel statistics of the training sets, in [0, 1] units.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_PAD = 4


def normalization(augment: str) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) in uint8 units for an augmentation family.

  'none' uses the ImageNet statistics: generic natural-image statistics, and
  what the 'fake' ImageNet-sized benchmark data is normalised with.
  """
  if augment == 'cifar':
    mean, std = CIFAR_MEAN, CIFAR_STD
  else:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
  return (np.asarray(mean, np.float32) * 255, np.asarray(std, np.float32) * 255)


def normalize(augment: str, images: jax.Array) -> jax.Array:
  """uint8 [..., C] -> float32 (x - mean) / std, per channel."""
  mean, std = normalization(augment)
  return (images.astype(jnp.float32) - mean) / std


def sample_crop_flip(rng: jax.Array, n: int, pad: int = CIFAR_PAD,
                     ) -> tuple[jax.Array, jax.Array]:
  """Per-example crop offsets int32 [n, 2] in [0, 2*pad] and flips bool [n]."""
  k_crop, k_flip = jax.random.split(rng)
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1, dtype=jnp.int32)
  flips = jax.random.bernoulli(k_flip, 0.5, (n,))
  return offsets, flips


def crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array,
              pad: int = CIFAR_PAD) -> jax.Array:
  """Zero-pads, crops each image at its offset, and mirrors where `flips`.

  Args:
    images: uint8 [N, H, W, C].
    offsets: int [N, 2], (row, column) of each crop in the padded image.
    flips: bool [N].
    pad: zero padding on every side.

  Returns:
    uint8 [N, H, W, C].
  """
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crops = jax.vmap(
      lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  )(padded, offsets)
  return jnp.where(flips[:, None, None, None], crops[:, :, ::-1, :], crops)


def random_crop_flip(rng: jax.Array, images: jax.Array,
                     pad: int = CIFAR_PAD) -> jax.Array:
  """The 'cifar' augmentation with jax.random: pad, random crop, random flip."""
  offsets, flips = sample_crop_flip(rng, images.shape[0], pad)
  return crop_flip(images, offsets, flips, pad)


def device_preprocess(config, rng: jax.Array, images: jax.Array, *,
                      train: bool) -> jax.Array:
  """Turns a uint8 batch into normalised float32 model inputs, on the device.

  Called by the trainer inside the train step, on each device's share of the
  batch. The tf.data pipeline has already applied the random augmentation on
  the host; with `config.on_device_data` (data resident on the devices) the
  random crop + flip of augment='cifar' is applied here instead.

  Args:
    config: the config (augment, on_device_data).
    rng: a PRNG key for this device and step (only used when augmenting).
    images: uint8 [N, H, W, C].
    train: True for training batches (augmented), False for evaluation.

  Returns:
    float32 [N, H, W, C], normalised per channel with the augmentation
    family's mean and std ('cifar': CIFAR-10's, otherwise ImageNet's).
  """
  if train and config.on_device_data and config.augment == 'cifar':
    images = random_crop_flip(rng, images)
  return normalize(config.augment, images)

"""Per-example image transforms of the host pipeline: PIL and numpy, uint8 out.

They run in the loader's worker processes (no jax, no TensorFlow here), with
randomness only from the `np.random.Generator` the loader gives each example
(seeded by the run's seed and the example's position in the training stream):
an example's augmentation does not depend on processes, devices or workers.
They follow torchvision (JPEGs decoded with libjpeg's accurate integer IDCT,
bilinear resizing with PIL's antialiasing); tests/test_data.py checks the PIL
paths against torchvision bit for bit.
"""

import dataclasses
import functools
import io
import math

import numpy as np
from PIL import Image

CIFAR_PAD = 4
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)


def decode(data) -> Image.Image:
  """Encoded image bytes (or a decoded array) -> an RGB PIL image."""
  image = Image.fromarray(data) if isinstance(data, np.ndarray) else Image.open(
      io.BytesIO(data))
  return image if image.mode == 'RGB' else image.convert('RGB')


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator
                            ) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: (top, left, height, width)."""
  log_lo, log_hi = math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])
  for _ in range(10):
    area = width * height * rng.uniform(*AREA_RANGE)
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  if width / height < ASPECT_RANGE[0]:
    w, h = width, int(round(width / ASPECT_RANGE[0]))
  elif width / height > ASPECT_RANGE[1]:
    w, h = int(round(height * ASPECT_RANGE[1])), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image, box: tuple[int, int, int, int], size: int
                 ) -> Image.Image:
  """torchvision's F.resized_crop on a PIL image: crop (top, left, h, w), resize."""
  top, left, h, w = box
  return image.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)


def eval_image(image: Image.Image, size: int, resize: int = 0) -> np.ndarray:
  """The evaluation crop to size x size: `resize` > 0 is torchvision's Resize(resize) +
  CenterCrop(size); 0 the centre 224/256 of the shorter side (the TF ResNet reference)."""
  w, h = image.size
  if not resize:
    side = max(1, int(min(h, w) * 224 / 256))
    return np.asarray(resized_crop(image, ((h - side + 1) // 2, (w - side + 1) // 2,
                                           side, side), size))
  # torchvision's Resize(int): the shorter side to `resize`, int() of the other.
  new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BILINEAR)
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  return np.asarray(image.crop((left, top, left + size, top + size)))


def cifar_train(image: np.ndarray, rng: np.random.Generator, pad: int = CIFAR_PAD
                ) -> np.ndarray:
  """Zero-pad by `pad`, crop H x W at a uniform offset, mirror with probability 1/2."""
  h, w, c = image.shape
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  flip = rng.random() < 0.5
  padded = np.zeros((h + 2 * pad, w + 2 * pad, c), np.uint8)
  padded[pad:pad + h, pad:pad + w] = image
  crop = padded[top:top + h, left:left + w]
  return crop[:, ::-1] if flip else crop


@functools.cache
def _rand_augment(config_str: str):
  from resnet_jax.augment import autoaugment  # pylint: disable=g-import-not-at-top
  return autoaugment.parse_rand_augment(config_str)


@dataclasses.dataclass(frozen=True)
class Transform:
  """A record (image bytes or array, label) -> {'image': uint8 [size, size, 3], 'label'}.

  `augment`, `eval_resize` and the recipe's host augmentations (`rand_augment`
  string, `trivial_augment`, `random_erasing` probability and mode; applied
  after the crop and flip in training, in timm's order) as the config's;
  `mean`/`std` ([0, 1] units) fill and erase as timm does; `train` selects the
  random training transform (else evaluation's).
  """
  augment: str
  size: int
  eval_resize: int = 0
  train: bool = True
  rand_augment: str = ''
  trivial_augment: bool = False
  random_erasing: float = 0.0
  random_erasing_mode: str = 'pixel'
  mean: tuple[float, ...] = (0.485, 0.456, 0.406)
  std: tuple[float, ...] = (0.229, 0.224, 0.225)

  def _recipe(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from resnet_jax.augment import autoaugment  # pylint: disable=g-import-not-at-top
    if self.rand_augment or self.trivial_augment:
      fill = tuple(int(round(255 * m)) for m in self.mean)
      image = Image.fromarray(np.ascontiguousarray(out))
      image = (autoaugment.rand_augment(image, rng, _rand_augment(self.rand_augment),
                                        fill=fill) if self.rand_augment else
               autoaugment.trivial_augment_wide(image, rng, fill=fill))
      out = np.asarray(image)
    if self.random_erasing:
      out = autoaugment.random_erasing(
          out, rng, probability=self.random_erasing, mode=self.random_erasing_mode,
          mean=255 * np.asarray(self.mean), std=255 * np.asarray(self.std))
    return out

  def __call__(self, record, rng: np.random.Generator | None) -> dict:
    data, label = record
    if self.augment == 'imagenet' and self.train:
      image = decode(data)  # The box needs only its size: an RGB file is decoded by the crop.
      out = np.asarray(resized_crop(image, random_resized_crop_box(*image.size, rng),
                                    self.size))
      out = out[:, ::-1] if rng.random() < 0.5 else out
    elif self.augment == 'imagenet':
      out = eval_image(decode(data), self.size, self.eval_resize)
    else:
      out = data if isinstance(data, np.ndarray) else np.asarray(decode(data))
      if out.shape[:2] != (self.size, self.size):
        out = np.asarray(decode(out).resize((self.size, self.size), Image.BILINEAR))
      if self.train and self.augment == 'cifar':
        out = cifar_train(out, rng)
    if self.train and (self.rand_augment or self.trivial_augment or self.random_erasing):
      out = self._recipe(out, rng)
    return {'image': out, 'label': np.int32(label)}

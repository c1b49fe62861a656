"""Per-example image transforms of the host pipeline: PIL and numpy, uint8 out.

They run in the data loader's worker processes, so this module imports
neither jax nor TensorFlow. Every random choice comes from the
`np.random.Generator` the loader hands each example (seeded by the run's seed
and the example's position in the training stream), so an example's
augmentation does not depend on the number of processes, devices or workers.

- Decoding: PIL (libjpeg's accurate integer IDCT for JPEGs, as torchvision
  decodes them), any format PIL reads, converted to RGB.
- 'imagenet' training: torchvision's `RandomResizedCrop(size, scale=(0.08, 1),
  ratio=(3/4, 4/3))` (10 attempts, else its centre-crop fallback), bilinear
  with PIL's antialiasing, then a horizontal flip with probability 1/2.
- Evaluation, `eval_resize=N > 0`: torchvision's `Resize(N) + CenterCrop(size)`
  (the transform its published accuracies use). `eval_resize=0`: the centre
  224/256 of the shorter side, resized to `size` (the TF ResNet reference).
- 'cifar' training: zero-pad 4, crop at a uniform offset, flip with
  probability 1/2 (the same rule as the in-step version in `placement.py`).
"""

import dataclasses
import io
import math

import numpy as np
from PIL import Image

CIFAR_PAD = 4
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
# The TF reference evaluation crop: the centre 224/256 of the shorter side.
EVAL_CROP_FRACTION = 224 / 256


def decode(data: bytes) -> Image.Image:
  """Encoded image bytes -> an RGB PIL image (JPEGs decoded as torchvision does)."""
  image = Image.open(io.BytesIO(data))
  if image.mode != 'RGB':
    image = image.convert('RGB')
  return image


def to_array(image: Image.Image, flip: bool = False) -> np.ndarray:
  """uint8 [H, W, 3] of a PIL image, mirrored left-right when `flip`."""
  array = np.asarray(image)
  return array[:, ::-1] if flip else array


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            area_range=AREA_RANGE, aspect_range=ASPECT_RANGE,
                            ) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: (top, left, height, width)."""
  area = height * width
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(CROP_ATTEMPTS):
    target_area = area * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  ratio = width / height
  if ratio < aspect_range[0]:
    w, h = width, int(round(width / aspect_range[0]))
  elif ratio > aspect_range[1]:
    h, w = height, int(round(height * aspect_range[1]))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image, box: tuple[int, int, int, int],
                 size: int) -> Image.Image:
  """torchvision's F.resized_crop on a PIL image: crop (top, left, h, w), resize."""
  top, left, h, w = box
  crop = image.crop((left, top, left + w, top + h))
  return crop.resize((size, size), Image.BILINEAR)


def imagenet_train(data: bytes, rng: np.random.Generator, size: int) -> np.ndarray:
  """Random resized crop to size x size + random flip, from encoded bytes."""
  image = Image.open(io.BytesIO(data))
  # The box needs only the header; the decode happens once, inside crop().
  box = random_resized_crop_box(image.width, image.height, rng)
  flip = rng.random() < 0.5
  if image.mode != 'RGB':
    image = image.convert('RGB')
  return to_array(resized_crop(image, box, size), flip)


def resize_shorter(image: Image.Image, shorter: int) -> Image.Image:
  """torchvision's Resize(shorter): the shorter side to `shorter`, aspect kept."""
  w, h = image.size
  if w <= h:
    new_w, new_h = shorter, int(shorter * h / w)
  else:
    new_w, new_h = int(shorter * w / h), shorter
  if (new_w, new_h) == (w, h):
    return image
  return image.resize((new_w, new_h), Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
  """torchvision's CenterCrop(size) for an image at least size x size."""
  w, h = image.size
  top = int(round((h - size) / 2.0))
  left = int(round((w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def eval_image(image: Image.Image, size: int, resize: int = 0) -> np.ndarray:
  """The evaluation crop to size x size (`resize` as config.eval_resize)."""
  if resize:
    return to_array(center_crop(resize_shorter(image, resize), size))
  w, h = image.size
  side = max(1, int(min(h, w) * EVAL_CROP_FRACTION))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  return to_array(resized_crop(image, (top, left, side, side), size))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3] (bilinear, antialiased); a no-op at that size."""
  if image.shape[:2] == (size, size):
    return image
  return to_array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def cifar_train(image: np.ndarray, rng: np.random.Generator,
                pad: int = CIFAR_PAD) -> np.ndarray:
  """Zero-pad by `pad`, crop H x W at a uniform offset, mirror with probability 1/2."""
  h, w, c = image.shape
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  flip = rng.random() < 0.5
  padded = np.zeros((h + 2 * pad, w + 2 * pad, c), np.uint8)
  padded[pad:pad + h, pad:pad + w] = image
  crop = padded[top:top + h, left:left + w]
  return crop[:, ::-1] if flip else crop


def _as_image(record_image) -> Image.Image:
  if isinstance(record_image, np.ndarray):
    return Image.fromarray(record_image)
  return decode(record_image)


def _as_array(record_image) -> np.ndarray:
  if isinstance(record_image, np.ndarray):
    return record_image
  return np.asarray(decode(record_image))


@dataclasses.dataclass(frozen=True)
class Transform:
  """A record (image bytes or array, label) -> {'image': uint8 [size, size, 3], 'label'}.

  Attributes:
    augment: 'cifar', 'imagenet' or 'none' (config.augment).
    size: output side.
    eval_resize: the evaluation transform of 'imagenet' (config.eval_resize).
    train: training (random augmentation) or evaluation.
  """
  augment: str
  size: int
  eval_resize: int = 0
  train: bool = True

  def __call__(self, record, rng: np.random.Generator | None) -> dict:
    image, label = record
    if self.augment == 'imagenet':
      if self.train:
        if isinstance(image, np.ndarray):
          box = random_resized_crop_box(image.shape[1], image.shape[0], rng)
          flip = rng.random() < 0.5
          out = to_array(resized_crop(Image.fromarray(image), box, self.size), flip)
        else:
          out = imagenet_train(image, rng, self.size)
      else:
        out = eval_image(_as_image(image), self.size, self.eval_resize)
    else:
      out = resize_square(_as_array(image), self.size)
      if self.train and self.augment == 'cifar':
        out = cifar_train(out, rng)
    return {'image': out, 'label': np.int32(label)}

"""Per-example tf.data image ops for the host pipeline; all output uint8.

Randomness is stateless (`tf.random.stateless_*` from an explicit [2] seed), so
an example's augmentation depends only on (config.seed, epoch, its position
in the epoch): reproducible, independent of tf.data's parallelism, and
identical after a resume.

'cifar' mirrors `preprocess.crop_flip` (the on-device version) exactly:
zero-pad 4, crop at a uniform offset in [0, 8]^2, flip with probability 1/2.
'imagenet' is the Inception-style random resized crop (area 8-100 %, aspect
3/4-4/3, 10 attempts, else a centre crop) + flip. Its evaluation transform
(`config.eval_resize`) is one of:

- 0: the centre 224/256 of the shorter side, resized to the output size (the
  TF ResNet reference; only the crop of a JPEG is decoded);
- N > 0: torchvision's `Resize(N) + CenterCrop(size)` (N = 256 for its V1
  weights, 232 for V2): the whole image resized so that its shorter side is
  N, keeping the aspect ratio (the longer side truncated as torchvision does),
  then the centre size x size, offsets rounded half to even as Python's
  `round`; JPEGs decoded with the accurate integer DCT and resampled in two
  uint8 passes, as PIL does both. This is what torchvision's published
  accuracies use.

From the same image the two transforms give different pixels (where the
resampling grid falls); ours and torchvision's (PIL) agree but for PIL's
fixed-point rounding (measured in experiments/results/pretrained_parity.md).
Resizing is bilinear with antialiasing everywhere, as PIL's.
"""

import tensorflow as tf

from resnet_jax.errors import ConfigError

CIFAR_PAD = 4
EVAL_CROP_FRACTION = 224 / 256
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _round_half_up(image: tf.Tensor) -> tf.Tensor:
  """float -> uint8 as PIL rounds (0.5 up; tf.round rounds half to even)."""
  return tf.cast(tf.clip_by_value(tf.floor(image + 0.5), 0, 255), tf.uint8)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes to size x size (uint8 in and out); a no-op when already there."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  out = tf.image.resize(image, [size, size], method='bilinear', antialias=True)
  return _to_uint8(out)


# JPEGs are decoded with libjpeg's accurate integer IDCT, as PIL (and so
# torchvision) does; TensorFlow's default, the fast one, differs from it by up
# to ~20 levels on photos (5 on the CIFAR-10 JPEG copy), at no measurable speed
# gain here. Every JPEG decode of the tf.data path uses this method.
JPEG_DCT = 'INTEGER_ACCURATE'


def decode(encoded: tf.Tensor) -> tf.Tensor:
  """JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, 3], JPEGs as PIL decodes them."""
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=JPEG_DCT),
      lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))


def crop_flip(image: tf.Tensor, offset: tf.Tensor, flip: tf.Tensor,
              pad: int = CIFAR_PAD) -> tf.Tensor:
  """Zero-pads by `pad`, crops H x W at `offset` (row, col), mirrors if `flip`."""
  h, w, c = image.shape
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  crop = tf.slice(padded, [offset[0], offset[1], 0], [h, w, c])
  return tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)


def cifar_train(image: tf.Tensor, seed: tf.Tensor, pad: int = CIFAR_PAD) -> tf.Tensor:
  """Random crop of the zero-padded image + random horizontal flip."""
  s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  offset = tf.random.stateless_uniform([2], s_crop, 0, 2 * pad + 1, dtype=tf.int32)
  flip = tf.random.stateless_uniform([], s_flip) < 0.5
  return crop_flip(image, offset, flip, pad)


def _image_shape(encoded: tf.Tensor, is_jpeg: bool):
  if is_jpeg:
    return tf.image.extract_jpeg_shape(encoded), None
  image = decode(encoded)
  return tf.shape(image), image


def _crop(encoded, image, window, is_jpeg):
  """Decodes only the window for JPEGs (much faster for large images)."""
  if is_jpeg:
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3,
                                         dct_method=JPEG_DCT)
  return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def _center_window(shape, fraction):
  h, w = shape[0], shape[1]
  side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * fraction, tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])


def imagenet_train(encoded: tf.Tensor, seed: tf.Tensor, size: int,
                   is_jpeg: bool) -> tf.Tensor:
  """Random resized crop to size x size + random flip, from encoded bytes."""
  s_box, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape, image = _image_shape(encoded, is_jpeg)
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=s_box, min_object_covered=AREA_RANGE[0],
      aspect_ratio_range=ASPECT_RANGE, area_range=AREA_RANGE,
      max_attempts=CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], box_size[0], box_size[1]])
  # No box found in CROP_ATTEMPTS tries: TF returns the whole image; use the
  # eval centre crop then, as the reference implementations do.
  failed = tf.reduce_all(tf.equal(box_size[:2], shape[:2]))
  window = tf.where(failed, _center_window(shape, EVAL_CROP_FRACTION), window)
  crop = _crop(encoded, image, window, is_jpeg)
  out = _to_uint8(tf.image.resize(crop, [size, size], method='bilinear',
                                  antialias=True))
  out = tf.ensure_shape(out, [size, size, 3])
  flip = tf.random.stateless_uniform([], s_flip) < 0.5
  return tf.cond(flip, lambda: tf.reverse(out, axis=[1]), lambda: out)


def torchvision_resize_size(size: int) -> int:
  """torchvision's usual shorter side before a `size` centre crop (224 -> 256)."""
  return size * 256 // 224


def torchvision_eval(encoded: tf.Tensor, size: int, resize: int | None = None) -> tf.Tensor:
  """torchvision's Resize(resize) + CenterCrop(size), from encoded bytes.

  Args:
    encoded: JPEG/PNG/... bytes.
    size: output side (the crop).
    resize: the shorter side after resizing; None = torchvision_resize_size(size).
  """
  image = decode(encoded)
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  short = torchvision_resize_size(size) if resize is None else resize
  # torchvision: int(short * long / shorter_side); exact in integers.
  new_h = tf.where(w <= h, (short * h) // w, short)
  new_w = tf.where(w <= h, short, (short * w) // h)
  # As PIL resamples uint8 images: the width first, rounded (half up) to uint8,
  # then the height. One 2-D resize in float differs by 1 level on ~10 % of the
  # values; this on ~0.1 % (PIL's fixed-point weights).
  wide = _round_half_up(tf.image.resize(image, tf.stack([h, new_w]), method='bilinear',
                                        antialias=True))
  resized = _round_half_up(tf.image.resize(wide, tf.stack([new_h, new_w]),
                                           method='bilinear', antialias=True))
  # torchvision.transforms.functional.center_crop: int(round((H - size) / 2.0)).
  top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2), tf.int32)
  crop = tf.slice(resized, tf.stack([top, left, 0]), [size, size, 3])
  return tf.ensure_shape(crop, [size, size, 3])


def imagenet_eval(encoded: tf.Tensor, size: int, is_jpeg: bool,
                  resize: int = 0) -> tf.Tensor:
  """Eval crop to size x size from encoded bytes: 'resize' as config.eval_resize."""
  if isinstance(resize, bool) or not isinstance(resize, int) or (
      resize != 0 and resize < size):
    raise ConfigError(f'eval_resize={resize!r} must be 0 (centre 224/256 crop, then '
                      f'resize) or a shorter side >= image_size={size} (torchvision: 256)')
  if resize:
    return torchvision_eval(encoded, size, resize)
  shape, image = _image_shape(encoded, is_jpeg)
  crop = _crop(encoded, image, _center_window(shape, EVAL_CROP_FRACTION), is_jpeg)
  out = _to_uint8(tf.image.resize(crop, [size, size], method='bilinear',
                                  antialias=True))
  return tf.ensure_shape(out, [size, size, 3])

"""Host-side RandAugment, TrivialAugment-wide and random erasing, as timm / torchvision do them.

Plain functions for a data loader's worker processes: numpy and PIL only (no
jax, flax, TensorFlow or torch), and all randomness from the
`np.random.Generator` passed in, never Python's `random` or numpy's global
state, so that an example's augmentation depends only on the generator, e.g.
`np.random.default_rng([seed, index])`:

    spec = autoaugment.parse_rand_augment('rand-m9-mstd0.5-inc1')
    image = autoaugment.rand_augment(image, rng, spec, fill=(124, 116, 104))
    image = autoaugment.trivial_augment_wide(image, rng)
    array = autoaugment.random_erasing(np.asarray(image), rng, probability=0.25,
                                       mode='pixel', mean=mean, std=std)

What each reproduces (tests/test_autoaugment.py compares against fixtures
written by timm 1.0 and torchvision 0.28, experiments/autoaugment_parity.py):

- `rand_augment`: timm's `rand_augment_transform(config_str, hparams)` as
  timm's `create_transform` builds it for training: ops, magnitude -> argument
  rules, op choice, per-op probability, magnitude noise and clamping, and the
  random bilinear/bicubic choice of geometric ops (timm's default
  `interpolation='random'`). Given the same random draws the images are equal
  to timm's bit for bit (both call the same PIL functions), with one
  exception: Posterize to 0 bits (timm's 'Posterize' below level 2.5,
  'PosterizeIncreasing' at level 10) makes a black image here, as timm did
  with Pillow before 13, where timm now raises ValueError (Pillow 13 refuses
  0 bits).
- `trivial_augment_wide`: torchvision's `TrivialAugmentWide` (timm 1.0 has no
  TrivialAugment), with its defaults: 31 magnitude bins, nearest-neighbour
  resampling, fill 0. Its float32 magnitude bins are computed as torch's CPU
  `linspace` computes them (one rounding per value).
- `random_erasing`: timm's `RandomErasing` for one image, with one difference:
  timm erases after normalisation, in float, and this erases the uint8 image
  (the pipeline normalises on the device). A box is filled with
  `mean + std * z` rounded to uint8 and clipped to [0, 255], where timm writes
  `z` itself ('const': z = 0; 'rand': one normal z per channel; 'pixel': one per
  value). Normalised, the erased values differ from timm's by the rounding
  (at most 0.5 / std, under 0.01 for ImageNet's std) and, for the normal
  draws beyond about +-2.1 that clipping cuts, by how far they lie beyond.
  timm's `num_splits` (a clean share of a batch) does not apply to one image.
"""

import dataclasses
import functools
import math
import re
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from resnet_jax.errors import ConfigError

NEAREST = Image.Resampling.NEAREST
BILINEAR = Image.Resampling.BILINEAR
BICUBIC = Image.Resampling.BICUBIC
_AFFINE = Image.Transform.AFFINE

# timm's fill and resampling when its hparams name none (rand_augment_transform
# without hparams); create_transform passes the dataset mean as the fill.
_TIMM_FILL = (128, 128, 128)
# timm's 'random' interpolation: a geometric op picks one of these per call.
_RANDOM_INTERPOLATION = (BILINEAR, BICUBIC)
_INTERPOLATIONS = {'nearest': NEAREST, 'bilinear': BILINEAR, 'bicubic': BICUBIC}

# timm's magnitude scale: 'm10' is the full strength of every op.
_LEVEL_DENOM = 10.
_EXAMPLE = 'rand-m9-mstd0.5-inc1'

# ----------------------------------------------------------------------------
# Ops: timm's (timm/data/auto_augment.py), one PIL call each.
# ----------------------------------------------------------------------------


def shear_x(image: Image.Image, factor: float, *, fill=_TIMM_FILL,
            resample=BICUBIC) -> Image.Image:
  """Shears along x: output (x, y) samples input (x + factor * y, y)."""
  return image.transform(image.size, _AFFINE, (1, factor, 0, 0, 1, 0),
                         resample=resample, fillcolor=fill)


def shear_y(image: Image.Image, factor: float, *, fill=_TIMM_FILL,
            resample=BICUBIC) -> Image.Image:
  """Shears along y: output (x, y) samples input (x, factor * x + y)."""
  return image.transform(image.size, _AFFINE, (1, 0, 0, factor, 1, 0),
                         resample=resample, fillcolor=fill)


def translate_x_rel(image: Image.Image, pct: float, *, fill=_TIMM_FILL,
                    resample=BICUBIC) -> Image.Image:
  """Translates by `pct` of the width (positive moves the content left)."""
  pixels = pct * image.size[0]
  return image.transform(image.size, _AFFINE, (1, 0, pixels, 0, 1, 0),
                         resample=resample, fillcolor=fill)


def translate_y_rel(image: Image.Image, pct: float, *, fill=_TIMM_FILL,
                    resample=BICUBIC) -> Image.Image:
  """Translates by `pct` of the height (positive moves the content up)."""
  pixels = pct * image.size[1]
  return image.transform(image.size, _AFFINE, (1, 0, 0, 0, 1, pixels),
                         resample=resample, fillcolor=fill)


def translate_x_abs(image: Image.Image, pixels: float, *, fill=_TIMM_FILL,
                    resample=BICUBIC) -> Image.Image:
  """Translates by `pixels` along x (timm's AutoAugment 'TranslateX')."""
  return image.transform(image.size, _AFFINE, (1, 0, pixels, 0, 1, 0),
                         resample=resample, fillcolor=fill)


def translate_y_abs(image: Image.Image, pixels: float, *, fill=_TIMM_FILL,
                    resample=BICUBIC) -> Image.Image:
  """Translates by `pixels` along y (timm's AutoAugment 'TranslateY')."""
  return image.transform(image.size, _AFFINE, (1, 0, 0, 0, 1, pixels),
                         resample=resample, fillcolor=fill)


def rotate(image: Image.Image, degrees: float, *, fill=_TIMM_FILL,
           resample=BICUBIC) -> Image.Image:
  """Rotates counter-clockwise about the centre, keeping the size."""
  return image.rotate(degrees, resample=resample, fillcolor=fill)


def auto_contrast(image: Image.Image) -> Image.Image:
  """Stretches each channel to [0, 255] (PIL's autocontrast, no cutoff)."""
  return ImageOps.autocontrast(image)


def invert(image: Image.Image) -> Image.Image:
  """255 - value."""
  return ImageOps.invert(image)


def equalize(image: Image.Image) -> Image.Image:
  """Equalises each channel's histogram."""
  return ImageOps.equalize(image)


def solarize(image: Image.Image, thresh: float) -> Image.Image:
  """Inverts values >= thresh (256: none, 0: all)."""
  return ImageOps.solarize(image, thresh)


@functools.lru_cache(maxsize=None)
def _solarize_add_lut(add: int, thresh: int) -> tuple[int, ...]:
  lut = tuple(min(255, i + add) if i < thresh else i for i in range(256))
  return lut * 3


def solarize_add(image: Image.Image, add: int, thresh: int = 128) -> Image.Image:
  """Adds `add` (saturating) to values below `thresh`."""
  if image.mode not in ('L', 'RGB'):
    return image  # As timm: other modes pass through.
  lut = _solarize_add_lut(add, thresh)
  return image.point(list(lut if image.mode == 'RGB' else lut[:256]))


def posterize(image: Image.Image, bits_to_keep: int) -> Image.Image:
  """Keeps the `bits_to_keep` most significant bits (8 or more: unchanged; 0: black)."""
  if bits_to_keep >= 8:
    return image
  if bits_to_keep <= 0:
    # Pillow 13 refuses 0 bits (timm's 'Posterize' below level 2.5 and
    # 'PosterizeIncreasing' at 10 then raise); older Pillow's lut gave black.
    return Image.new(image.mode, image.size)
  return ImageOps.posterize(image, bits_to_keep)


def contrast(image: Image.Image, factor: float) -> Image.Image:
  """Blends with the mean grey (0: grey, 1: unchanged, >1: more contrast)."""
  return ImageEnhance.Contrast(image).enhance(factor)


def color(image: Image.Image, factor: float) -> Image.Image:
  """Blends with the greyscale image (0: grey, 1: unchanged, >1: more saturated)."""
  return ImageEnhance.Color(image).enhance(factor)


def brightness(image: Image.Image, factor: float) -> Image.Image:
  """Blends with black (0: black, 1: unchanged, >1: brighter)."""
  return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float) -> Image.Image:
  """Blends with PIL's smoothed image (0: smooth, 1: unchanged, >1: sharper)."""
  return ImageEnhance.Sharpness(image).enhance(factor)


def gaussian_blur(image: Image.Image, radius: float) -> Image.Image:
  """PIL's Gaussian blur of the given radius (timm's 3-Augment 'GaussianBlur')."""
  return image.filter(ImageFilter.GaussianBlur(radius=radius))


def desaturate(image: Image.Image, factor: float) -> Image.Image:
  """Removes `factor` of the colour (1: greyscale; timm's 3-Augment 'Desaturate')."""
  factor = min(1., max(0., 1. - factor))
  return ImageEnhance.Color(image).enhance(factor)


# ----------------------------------------------------------------------------
# Magnitude -> op argument: timm's level_to_arg functions, with the random
# sign made an explicit argument so that a test can set it.
# ----------------------------------------------------------------------------


def _signed(value: float, negate: bool) -> float:
  return -value if negate else value


def _rotate_arg(level, negate):
  return _signed((level / _LEVEL_DENOM) * 30., negate),


def _enhance_arg(level, negate):
  del negate
  return (level / _LEVEL_DENOM) * 1.8 + 0.1,


def _enhance_increasing_arg(level, negate):
  # 1.0 is 'no change'; the level moves the factor towards 0.1 or 1.9.
  level = (level / _LEVEL_DENOM) * .9
  return max(0.1, 1.0 + _signed(level, negate)),


def _minmax_arg(min_val, max_val):
  def level_to_arg(level, negate):
    del negate
    level = level / _LEVEL_DENOM
    level = min_val + (max_val - min_val) * level
    return max(min_val, min(max_val, level)),
  return level_to_arg


def _shear_arg(level, negate):
  return _signed((level / _LEVEL_DENOM) * 0.3, negate),


def _translate_abs_arg(translate_const):
  def level_to_arg(level, negate):
    return _signed((level / _LEVEL_DENOM) * float(translate_const), negate),
  return level_to_arg


def _translate_rel_arg(level, negate):
  # timm's default translate_pct; only its AugMix changes it.
  return _signed((level / _LEVEL_DENOM) * 0.45, negate),


def _posterize_arg(level, negate):
  del negate
  # TPU EfficientNet: keep 0 up to 4 bits; the op gets milder with the level.
  return int((level / _LEVEL_DENOM) * 4),


def _posterize_increasing_arg(level, negate):
  return 4 - _posterize_arg(level, negate)[0],


def _solarize_arg(level, negate):
  del negate
  return min(256, int((level / _LEVEL_DENOM) * 256)),


def _solarize_increasing_arg(level, negate):
  return 256 - _solarize_arg(level, negate)[0],


def _solarize_add_arg(level, negate):
  del negate
  return min(128, int((level / _LEVEL_DENOM) * 110)),


@dataclasses.dataclass(frozen=True)
class _Op:
  fn: object
  level_to_arg: object  # None: the op takes no argument.
  signed: bool  # Its level_to_arg draws a random sign (timm's _randomly_negate).
  geometric: bool  # Takes fill and resample (timm's _check_args_tf ops).


# timm's NAME_TO_OP / LEVEL_TO_ARG for every op a RandAugment set can name.
# translate_const is timm's default hparam; create_transform sets
# int(0.45 * image size), but no RandAugment set uses the absolute translations.
OPS = {
    'AutoContrast': _Op(auto_contrast, None, False, False),
    'Equalize': _Op(equalize, None, False, False),
    'Invert': _Op(invert, None, False, False),
    'Rotate': _Op(rotate, _rotate_arg, True, True),
    'Posterize': _Op(posterize, _posterize_arg, False, False),
    'PosterizeIncreasing': _Op(posterize, _posterize_increasing_arg, False, False),
    'Solarize': _Op(solarize, _solarize_arg, False, False),
    'SolarizeIncreasing': _Op(solarize, _solarize_increasing_arg, False, False),
    'SolarizeAdd': _Op(solarize_add, _solarize_add_arg, False, False),
    'Color': _Op(color, _enhance_arg, False, False),
    'ColorIncreasing': _Op(color, _enhance_increasing_arg, True, False),
    'Contrast': _Op(contrast, _enhance_arg, False, False),
    'ContrastIncreasing': _Op(contrast, _enhance_increasing_arg, True, False),
    'Brightness': _Op(brightness, _enhance_arg, False, False),
    'BrightnessIncreasing': _Op(brightness, _enhance_increasing_arg, True, False),
    'Sharpness': _Op(sharpness, _enhance_arg, False, False),
    'SharpnessIncreasing': _Op(sharpness, _enhance_increasing_arg, True, False),
    'ShearX': _Op(shear_x, _shear_arg, True, True),
    'ShearY': _Op(shear_y, _shear_arg, True, True),
    'TranslateX': _Op(translate_x_abs, _translate_abs_arg(250), True, True),
    'TranslateY': _Op(translate_y_abs, _translate_abs_arg(250), True, True),
    'TranslateXRel': _Op(translate_x_rel, _translate_rel_arg, True, True),
    'TranslateYRel': _Op(translate_y_rel, _translate_rel_arg, True, True),
    'Desaturate': _Op(desaturate, _minmax_arg(0.5, 1.0), False, False),
    'GaussianBlur': _Op(gaussian_blur, _minmax_arg(0.1, 2.0), False, False),
}

# timm's op sets, in timm's order (the order indexes the random op choice).
RAND_TRANSFORMS = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
    'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX',
    'ShearY', 'TranslateXRel', 'TranslateYRel')
RAND_INCREASING_TRANSFORMS = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
    'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
    'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY',
    'TranslateXRel', 'TranslateYRel')
RAND_3A = ('SolarizeIncreasing', 'Desaturate', 'GaussianBlur')
RAND_WEIGHTED_3A = {
    'SolarizeIncreasing': 6, 'Desaturate': 6, 'GaussianBlur': 6, 'Rotate': 3,
    'ShearX': 2, 'ShearY': 2, 'PosterizeIncreasing': 1, 'AutoContrast': 1,
    'ColorIncreasing': 1, 'SharpnessIncreasing': 1, 'ContrastIncreasing': 1,
    'BrightnessIncreasing': 1, 'Equalize': 1, 'Invert': 1,
}
RAND_WEIGHTED_0 = {
    'Rotate': 3, 'ShearX': 2, 'ShearY': 2, 'TranslateXRel': 1,
    'TranslateYRel': 1, 'ColorIncreasing': .25, 'SharpnessIncreasing': 0.25,
    'AutoContrast': 0.25, 'SolarizeIncreasing': .05, 'SolarizeAdd': .05,
    'ContrastIncreasing': .05, 'BrightnessIncreasing': .05, 'Equalize': .05,
    'PosterizeIncreasing': 0.05, 'Invert': 0.05,
}
# The '-t' section's values (timm's rand_augment_choices).
TRANSFORM_SETS = ('weights', '3a', '3aw')


def level_to_arg(name: str, level: float, *, negate: bool = False) -> tuple:
  """timm's arguments of op `name` at magnitude `level` (after clamping).

  Args:
    name: a key of `OPS` (timm's op name, e.g. 'Rotate', 'ColorIncreasing').
    level: the magnitude on timm's 0..10 scale ('m9' -> 9).
    negate: the random sign of signed ops (timm's `_randomly_negate`); ignored
      by the others.

  Returns:
    The op's arguments after the image: () for AutoContrast/Equalize/Invert.
  """
  op = OPS[name]
  return () if op.level_to_arg is None else op.level_to_arg(level, negate)


# ----------------------------------------------------------------------------
# RandAugment.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
  """A parsed timm RandAugment config string (see `parse_rand_augment`).

  Attributes:
    magnitude: 'm': the op strength on the 0..10 scale (default 10).
    num_layers: 'n': ops applied per image, chosen at random (default 2).
    prob: 'p': probability that a chosen op is applied (default 0.5).
    magnitude_std: 'mstd': std of the normal noise added to the magnitude
      per op; inf (from values over 100) samples it uniformly in
      [0, magnitude]. 0: no noise.
    magnitude_max: 'mmax': upper clamp of the sampled magnitude (default None:
      10).
    increasing: 'inc1': ops whose severity increases with the magnitude.
    transforms: 't': None (timm's default set), or 'weights', '3a', '3aw'.
  """
  magnitude: int = 10
  num_layers: int = 2
  prob: float = 0.5
  magnitude_std: float = 0.
  magnitude_max: int | None = None
  increasing: bool = False
  transforms: str | None = None

  @property
  def ops(self) -> tuple[str, ...]:
    """The op names the choice draws from, in timm's order."""
    return _op_set(self.transforms, self.increasing)[0]

  @property
  def choice_weights(self) -> np.ndarray | None:
    """Op choice probabilities (then without replacement), or None: uniform."""
    return _op_set(self.transforms, self.increasing)[1]


@functools.lru_cache(maxsize=None)
def _op_set(transforms, increasing):
  if transforms == 'weights':
    table = RAND_WEIGHTED_0
  elif transforms == '3aw':
    table = RAND_WEIGHTED_3A
  elif transforms == '3a':
    return RAND_3A, None
  else:
    return (RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS), None
  weights = np.array(list(table.values()))
  weights = weights / np.sum(weights)
  weights.setflags(write=False)
  return tuple(table), weights


_NUMBER = {'int': re.compile(r'\d+'), 'float': re.compile(r'\d+(\.\d*)?([eE][-+]?\d+)?')}


def _bad(config_str, what):
  return ConfigError(
      f'RandAugment config {config_str!r}: {what}; a valid example: {_EXAMPLE!r} '
      "(sections: m<int> n<int> p<float> mstd<float> mmax<int> inc<0|1> "
      "t<weights|3a|3aw>)")


def parse_rand_augment(config_str: str) -> RandAugmentSpec:
  """Parses timm's RandAugment config string, e.g. 'rand-m9-mstd0.5-inc1'.

  Sections after 'rand', separated by '-', in any order, as timm's
  `rand_augment_transform`: m<int> magnitude (default 10), n<int> ops per image
  (2), p<float> probability of each (0.5), mstd<float> magnitude noise std (0;
  over 100: uniform in [0, m]), mmax<int> magnitude clamp (10), inc<0|1> ops
  that grow with the magnitude (0), t<name> op set ('weights', '3a', '3aw';
  default timm's 15 ops). Stricter than timm, which skips what it cannot read:
  unknown, empty, repeated or malformed sections are errors. timm 1.0 removed
  the old 'w' section (its 'tweights' is not the same weights), so 'w' is an
  error pointing to 't'.

  Args:
    config_str: the config string.

  Returns:
    The spec.

  Raises:
    ConfigError: the string is not a valid config; the one-line message names
      the bad section and gives a valid example.
  """
  if not isinstance(config_str, str):
    raise _bad(config_str, 'not a string')
  sections = config_str.split('-')
  if sections[0] != 'rand':
    raise _bad(config_str, f"starts with {sections[0]!r}, not 'rand'")
  values = {}
  for section in sections[1:]:
    if not section:
      raise _bad(config_str, "an empty section (two '-' in a row, or a trailing '-')")
    if section.startswith('t'):
      key, value = 't', section[1:]
      if value not in TRANSFORM_SETS:
        raise _bad(config_str, f'section {section!r}: unknown op set {value!r} '
                   f'(one of {", ".join(TRANSFORM_SETS)})')
    else:
      match = re.fullmatch(r'([a-z]+)(.*)', section)
      key, text = (match.group(1), match.group(2)) if match else (section, '')
      kinds = {'m': 'int', 'n': 'int', 'p': 'float', 'mstd': 'float',
               'mmax': 'int', 'inc': 'int'}
      if key == 'w':
        raise _bad(config_str, f"section {section!r}: timm 1.0 removed the 'w' "
                   "(choice weights) section; use 'tweights' for weighted op choice")
      if key not in kinds:
        raise _bad(config_str, f'unknown section {section!r}')
      if not _NUMBER[kinds[key]].fullmatch(text):
        raise _bad(config_str, f'section {section!r}: {key!r} needs '
                   f'{"an integer" if kinds[key] == "int" else "a number"}, got {text!r}')
      value = int(text) if kinds[key] == 'int' else float(text)
      if key == 'p' and not 0. <= value <= 1.:
        raise _bad(config_str, f'section {section!r}: a probability in [0, 1]')
      if key == 'inc' and value not in (0, 1):
        raise _bad(config_str, f'section {section!r}: inc is 0 or 1')
      if key == 'mmax' and value < 1:
        raise _bad(config_str, f'section {section!r}: mmax is at least 1')
    if key in values:
      raise _bad(config_str, f'section {section!r} repeats {key!r}')
    values[key] = value
  mstd = values.get('mstd', 0.)
  spec = RandAugmentSpec(
      magnitude=values.get('m', int(_LEVEL_DENOM)),
      num_layers=values.get('n', 2),
      prob=values.get('p', 0.5),
      # As timm: over 100 means uniform sampling in [0, magnitude].
      magnitude_std=float('inf') if mstd > 100 else mstd,
      magnitude_max=values.get('mmax'),
      increasing=bool(values.get('inc', 0)),
      transforms=values.get('t'))
  if spec.choice_weights is not None and spec.num_layers > len(spec.ops):
    # Weighted choice is without replacement, as timm's.
    raise _bad(config_str, f"n{spec.num_layers} is more than the {len(spec.ops)} "
               f"ops of 't{spec.transforms}' (chosen without replacement)")
  return spec


@dataclasses.dataclass(frozen=True)
class OpDraw:
  """One op a RandAugment draw applies.

  Attributes:
    name: the op (a key of `OPS`).
    magnitude: the sampled magnitude after clamping.
    negate: the sign drawn for signed ops (False for the others).
    args: the op's arguments (`level_to_arg(name, magnitude, negate=negate)`).
    resample: PIL resampling filter of geometric ops, else None.
  """
  name: str
  magnitude: float
  negate: bool
  args: tuple
  resample: int | None


def _resample(interpolation: str) -> int | None:
  if interpolation == 'random':
    return None
  try:
    return _INTERPOLATIONS[interpolation]
  except KeyError:
    raise ConfigError(f'interpolation {interpolation!r}: one of random, '
                      f'{", ".join(_INTERPOLATIONS)}') from None


def sample_rand_augment(rng: np.random.Generator, spec: RandAugmentSpec, *,
                        interpolation: str = 'random') -> list[OpDraw]:
  """Draws one image's RandAugment ops, in timm's order of draws.

  timm (RandAugment.__call__ and AugmentOp.__call__): choose `num_layers` ops
  (uniformly with replacement, or by the weights without); for each, skip it
  unless uniform() <= prob (no draw when prob is 1), draw the magnitude
  (normal(m, mstd) or uniform(0, m)), clamp it to [0, mmax or 10], draw the sign
  of signed ops (negative when uniform() > 0.5), and for geometric ops under
  'random' interpolation draw bilinear or bicubic.

  Args:
    rng: the generator every draw comes from.
    spec: the parsed config.
    interpolation: 'random' (timm's training default), 'bilinear', 'bicubic'
      or 'nearest' (timm's hparams['interpolation']).

  Returns:
    The ops to apply, in order (skipped ones left out).
  """
  fixed_resample = _resample(interpolation)
  names = spec.ops
  weights = spec.choice_weights
  chosen = rng.choice(len(names), spec.num_layers, replace=weights is None,
                      p=weights)
  upper_bound = spec.magnitude_max or _LEVEL_DENOM
  draws = []
  for index in chosen:
    name = names[int(index)]
    op = OPS[name]
    if spec.prob < 1.0 and rng.random() > spec.prob:
      continue
    magnitude = spec.magnitude
    if spec.magnitude_std == float('inf'):
      magnitude = rng.uniform(0, magnitude)
    elif spec.magnitude_std > 0:
      magnitude = rng.normal(magnitude, spec.magnitude_std)
    magnitude = max(0., min(float(magnitude), upper_bound))
    negate = bool(op.signed and rng.random() > 0.5)
    args = level_to_arg(name, magnitude, negate=negate)
    resample = None
    if op.geometric:
      resample = fixed_resample
      if resample is None:
        resample = _RANDOM_INTERPOLATION[int(rng.integers(2))]
    draws.append(OpDraw(name, magnitude, negate, args, resample))
  return draws


def apply_ops(image: Image.Image, draws: Sequence[OpDraw], *,
              fill: tuple[int, int, int]) -> Image.Image:
  """Applies drawn RandAugment ops in order (`sample_rand_augment`'s list)."""
  for draw in draws:
    op = OPS[draw.name]
    if op.geometric:
      image = op.fn(image, *draw.args, fill=tuple(fill), resample=draw.resample)
    else:
      image = op.fn(image, *draw.args)
  return image


def rand_augment(image: Image.Image, rng: np.random.Generator,
                 spec: RandAugmentSpec, *, fill: tuple[int, int, int],
                 interpolation: str = 'random') -> Image.Image:
  """timm's RandAugment of one image.

  Args:
    image: an RGB PIL image.
    rng: the generator every draw comes from.
    spec: `parse_rand_augment(config_str)`.
    fill: the value geometric ops put outside the image: the dataset mean in
      uint8 (timm's hparams img_mean = round(255 * mean); ImageNet's is
      (124, 116, 104)).
    interpolation: 'random' (timm's training default: bilinear or bicubic per
      op), or 'bilinear', 'bicubic', 'nearest'.

  Returns:
    The augmented image (`image` itself when no op applies).
  """
  return apply_ops(image, sample_rand_augment(rng, spec, interpolation=interpolation),
                   fill=fill)


# ----------------------------------------------------------------------------
# TrivialAugment-wide: torchvision's TrivialAugmentWide on PIL images.
# ----------------------------------------------------------------------------


def _inverse_affine_matrix(center, angle, translate, scale, shear):
  # torchvision.transforms.functional._get_inverse_affine_matrix, same
  # operations in the same order so that PIL gets the same floats.
  rot = math.radians(angle)
  sx = math.radians(shear[0])
  sy = math.radians(shear[1])
  cx, cy = center
  tx, ty = translate
  a = math.cos(rot - sy) / math.cos(sy)
  b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
  c = math.sin(rot - sy) / math.cos(sy)
  d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
  matrix = [d, -b, 0.0, -c, a, 0.0]
  matrix = [x / scale for x in matrix]
  matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
  matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
  matrix[2] += cx
  matrix[5] += cy
  return matrix


def _tv_fill(fill):
  return tuple(int(x) for x in fill)


def tv_shear_x(image: Image.Image, magnitude: float, *, fill=(0, 0, 0),
               resample=NEAREST) -> Image.Image:
  """torchvision's 'ShearX': shear angle atan(magnitude) about the corner."""
  matrix = _inverse_affine_matrix(
      [0, 0], 0.0, [0, 0], 1.0, [math.degrees(math.atan(magnitude)), 0.0])
  return image.transform(image.size, _AFFINE, matrix, resample,
                         fillcolor=_tv_fill(fill))


def tv_shear_y(image: Image.Image, magnitude: float, *, fill=(0, 0, 0),
               resample=NEAREST) -> Image.Image:
  """torchvision's 'ShearY': shear angle atan(magnitude) about the corner."""
  matrix = _inverse_affine_matrix(
      [0, 0], 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(magnitude))])
  return image.transform(image.size, _AFFINE, matrix, resample,
                         fillcolor=_tv_fill(fill))


def _tv_translate(image, translate, fill, resample):
  width, height = image.size
  matrix = _inverse_affine_matrix(
      [width * 0.5, height * 0.5], 0.0, translate, 1.0, [0.0, 0.0])
  return image.transform(image.size, _AFFINE, matrix, resample,
                         fillcolor=_tv_fill(fill))


def tv_translate_x(image: Image.Image, magnitude: float, *, fill=(0, 0, 0),
                   resample=NEAREST) -> Image.Image:
  """torchvision's 'TranslateX': int(magnitude) pixels (positive: right)."""
  return _tv_translate(image, [int(magnitude), 0], fill, resample)


def tv_translate_y(image: Image.Image, magnitude: float, *, fill=(0, 0, 0),
                   resample=NEAREST) -> Image.Image:
  """torchvision's 'TranslateY': int(magnitude) pixels (positive: down)."""
  return _tv_translate(image, [0, int(magnitude)], fill, resample)


def tv_rotate(image: Image.Image, magnitude: float, *, fill=(0, 0, 0),
              resample=NEAREST) -> Image.Image:
  """torchvision's 'Rotate': counter-clockwise degrees about the centre."""
  return image.rotate(magnitude, resample, False, None, fillcolor=_tv_fill(fill))


# (op, geometric) by torchvision's op name; colour ops get 1 + magnitude.
_TA_OPS = {
    'Identity': (lambda image, magnitude: image, False),
    'ShearX': (tv_shear_x, True),
    'ShearY': (tv_shear_y, True),
    'TranslateX': (tv_translate_x, True),
    'TranslateY': (tv_translate_y, True),
    'Rotate': (tv_rotate, True),
    'Brightness': (lambda image, m: brightness(image, 1.0 + m), False),
    'Color': (lambda image, m: color(image, 1.0 + m), False),
    'Contrast': (lambda image, m: contrast(image, 1.0 + m), False),
    'Sharpness': (lambda image, m: sharpness(image, 1.0 + m), False),
    'Posterize': (lambda image, m: ImageOps.posterize(image, int(m)), False),
    'Solarize': (lambda image, m: solarize(image, m), False),
    'AutoContrast': (lambda image, m: auto_contrast(image), False),
    'Equalize': (lambda image, m: equalize(image), False),
}
# torchvision's op order (TrivialAugmentWide._augmentation_space).
TRIVIAL_AUGMENT_OPS = tuple(_TA_OPS)


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  # torch.linspace(start, end, steps) in float32 as torch's CPU kernel
  # computes it: the first half from start, the rest from end, each value
  # start + step * i with a single rounding (a fused multiply-add).
  start32, end32 = np.float32(start), np.float32(end)
  step = np.float64((end32 - start32) / np.float32(steps - 1))
  values = np.empty(steps, np.float32)
  for i in range(steps):
    if i < steps // 2:
      values[i] = np.float32(np.float64(start32) + step * i)
    else:
      values[i] = np.float32(np.float64(end32) - step * (steps - i - 1))
  return values


@functools.lru_cache(maxsize=None)
def trivial_augment_bins(num_bins: int = 31) -> dict[str, tuple[tuple[float, ...] | None, bool]]:
  """torchvision's TrivialAugmentWide magnitude bins.

  Args:
    num_bins: torchvision's num_magnitude_bins.

  Returns:
    op name -> (magnitudes as Python floats of the float32 values, or None for
    ops without a magnitude; signed: whether a random sign applies).
  """
  def lin(start, end):
    return tuple(float(v) for v in _torch_linspace_f32(start, end, num_bins))
  posterize_bins = 8 - np.round(
      np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / 6))
  return {
      'Identity': (None, False),
      'ShearX': (lin(0.0, 0.99), True),
      'ShearY': (lin(0.0, 0.99), True),
      'TranslateX': (lin(0.0, 32.0), True),
      'TranslateY': (lin(0.0, 32.0), True),
      'Rotate': (lin(0.0, 135.0), True),
      'Brightness': (lin(0.0, 0.99), True),
      'Color': (lin(0.0, 0.99), True),
      'Contrast': (lin(0.0, 0.99), True),
      'Sharpness': (lin(0.0, 0.99), True),
      'Posterize': (tuple(float(int(v)) for v in posterize_bins), False),
      'Solarize': (lin(255.0, 0.0), False),
      'AutoContrast': (None, False),
      'Equalize': (None, False),
  }


def sample_trivial_augment(rng: np.random.Generator,
                           num_bins: int = 31) -> tuple[str, float]:
  """Draws torchvision's (op, signed magnitude): op, then bin, then sign."""
  bins = trivial_augment_bins(num_bins)
  name = TRIVIAL_AUGMENT_OPS[int(rng.integers(len(TRIVIAL_AUGMENT_OPS)))]
  magnitudes, signed = bins[name]
  magnitude = 0.0
  if magnitudes is not None:
    magnitude = magnitudes[int(rng.integers(len(magnitudes)))]
  if signed and rng.integers(2):
    magnitude *= -1.0
  return name, magnitude


def apply_trivial_augment_op(image: Image.Image, name: str, magnitude: float, *,
                             fill=(0, 0, 0), interpolation: str = 'nearest') -> Image.Image:
  """torchvision's `_apply_op` for PIL images: op `name` at `magnitude`."""
  fn, geometric = _TA_OPS[name]
  if geometric:
    resample = _resample(interpolation)
    if resample is None:
      raise ConfigError("TrivialAugment interpolation: 'nearest', 'bilinear' "
                        "or 'bicubic' (torchvision has no 'random')")
    return fn(image, magnitude, fill=fill, resample=resample)
  return fn(image, magnitude)


def trivial_augment_wide(image: Image.Image, rng: np.random.Generator, *,
                         fill: tuple[int, int, int] = (0, 0, 0),
                         num_magnitude_bins: int = 31,
                         interpolation: str = 'nearest') -> Image.Image:
  """torchvision's TrivialAugmentWide of one image (one op, one magnitude).

  Args:
    image: an RGB PIL image.
    rng: the generator every draw comes from.
    fill: the value geometric ops put outside the image; torchvision's default
      is 0 (black); pass the dataset mean in uint8 to fill as timm's
      RandAugment does.
    num_magnitude_bins: torchvision's num_magnitude_bins.
    interpolation: 'nearest' (torchvision's default), 'bilinear' or 'bicubic'.

  Returns:
    The augmented image.
  """
  name, magnitude = sample_trivial_augment(rng, num_magnitude_bins)
  return apply_trivial_augment_op(image, name, magnitude, fill=fill,
                                  interpolation=interpolation)


# ----------------------------------------------------------------------------
# Random erasing: timm's RandomErasing on one uint8 HWC image.
# ----------------------------------------------------------------------------

ERASE_MODES = ('const', 'rand', 'pixel')


def sample_erasing_boxes(rng: np.random.Generator, height: int, width: int, *,
                         probability: float, min_area: float = 0.02,
                         max_area: float = 1 / 3, min_aspect: float = 0.3,
                         max_aspect: float | None = None, min_count: int = 1,
                         max_count: int = 1) -> list[tuple[int, int, int, int]]:
  """timm's RandomErasing boxes for one image, in timm's order of draws.

  Erases with `probability`; then `count` boxes (uniform in [min_count,
  max_count]), each of area uniform(min_area, max_area) * image area / count
  and log-uniform aspect in [min_aspect, max_aspect (default 1 / min_aspect)],
  with up to 10 attempts each to fit strictly inside the image.

  Args:
    rng: the generator every draw comes from.
    height: image height.
    width: image width.
    probability: probability of erasing anything.
    min_area: smallest box area, as a fraction of the image (divided by count).
    max_area: largest box area, as a fraction of the image (divided by count).
    min_aspect: smallest height / width.
    max_aspect: largest height / width (None: 1 / min_aspect).
    min_count: fewest boxes.
    max_count: most boxes.

  Returns:
    (top, left, box_height, box_width) per box; empty when not erasing.
  """
  if rng.random() > probability:
    return []
  log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
  area = height * width
  count = min_count if min_count == max_count else int(
      rng.integers(min_count, max_count + 1))
  boxes = []
  for _ in range(count):
    for _ in range(10):
      target_area = rng.uniform(min_area, max_area) * area / count
      aspect_ratio = math.exp(rng.uniform(*log_aspect))
      h = int(round(math.sqrt(target_area * aspect_ratio)))
      w = int(round(math.sqrt(target_area / aspect_ratio)))
      if w < width and h < height:
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        boxes.append((top, left, h, w))
        break
  return boxes


def erase_box(image: np.ndarray, box: tuple[int, int, int, int], *, mode: str,
              mean: np.ndarray, std: np.ndarray,
              noise: np.ndarray | None = None) -> None:
  """Fills one box of a uint8 HWC image in place with timm's erasing values.

  timm writes, in normalised units, 0 ('const') or standard normal draws `z`
  ('rand': one per channel, 'pixel': one per value); this writes what they
  normalise from: round(mean + std * z), clipped to [0, 255] (in float32).

  Args:
    image: uint8 [H, W, C], modified in place.
    box: (top, left, height, width).
    mode: 'const', 'rand' or 'pixel'.
    mean: per-channel mean in uint8 units (255 * the [0, 1] mean, as
      `preprocess.normalization` returns it).
    std: per-channel std in uint8 units.
    noise: `z`, in normalised units: [1, 1, C] ('rand'), [height, width, C]
      ('pixel'); None for 'const'.
  """
  top, left, h, w = box
  mean = np.asarray(mean, np.float32)
  if mode == 'const':
    values = mean.reshape(1, 1, -1).copy()
  else:
    values = np.asarray(noise, np.float32) * np.asarray(std, np.float32)
    values += mean
  np.rint(values, out=values)
  np.clip(values, 0, 255, out=values)
  fill = values.astype(np.uint8)
  if fill.shape[:2] == (1, 1):
    # One colour: a contiguous row, so that numpy copies whole rows rather
    # than broadcasting C values at a time.
    fill = np.ascontiguousarray(np.broadcast_to(fill[0], (w, fill.shape[2])))
  image[top:top + h, left:left + w] = fill


def random_erasing(image: np.ndarray, rng: np.random.Generator, *,
                   probability: float, mode: str, mean: np.ndarray,
                   std: np.ndarray, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3,
                   max_aspect: float | None = None, min_count: int = 1,
                   max_count: int = 1) -> np.ndarray:
  """timm's RandomErasing of one uint8 HWC image (before normalisation).

  Boxes as `sample_erasing_boxes`, filled as `erase_box` (the mean for
  'const'; mean + std * N(0, 1), rounded and clipped, per box and channel for
  'rand', per value for 'pixel').

  Args:
    image: uint8 [H, W, C]; not modified.
    rng: the generator every draw comes from.
    probability: probability of erasing (timm's re_prob).
    mode: 'const', 'rand' or 'pixel' (timm's re_mode).
    mean: per-channel mean in uint8 units (`preprocess.normalization`'s).
    std: per-channel std in uint8 units.
    min_area: smallest box area, as a fraction of the image (divided by count).
    max_area: largest box area, as a fraction of the image (divided by count).
    min_aspect: smallest height / width (log-uniform).
    max_aspect: largest height / width (None: 1 / min_aspect).
    min_count: fewest boxes.
    max_count: most boxes (timm's re_count).

  Returns:
    A new array with the boxes erased, or `image` itself when nothing is.

  Raises:
    ConfigError: an unknown mode, or mean/std not in uint8 units.
  """
  mode = mode.lower()
  if mode not in ERASE_MODES:
    raise ConfigError(f'random erasing mode {mode!r}: one of {", ".join(ERASE_MODES)}')
  if np.max(mean) <= 1.0:
    raise ConfigError('random erasing mean/std are in uint8 units (e.g. 255 * '
                      f'(0.485, 0.456, 0.406)), got mean {mean}')
  height, width, channels = image.shape
  boxes = sample_erasing_boxes(
      rng, height, width, probability=probability, min_area=min_area,
      max_area=max_area, min_aspect=min_aspect, max_aspect=max_aspect,
      min_count=min_count, max_count=max_count)
  if not boxes:
    return image
  out = image.copy()
  for box in boxes:
    noise = None
    if mode == 'rand':
      noise = rng.standard_normal((1, 1, channels), dtype=np.float32)
    elif mode == 'pixel':
      noise = rng.standard_normal((box[2], box[3], channels), dtype=np.float32)
    erase_box(out, box, mode=mode, mean=mean, std=std, noise=noise)
  return out

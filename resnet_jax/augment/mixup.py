"""Mixup and CutMix over the global batch, on the device, with timm's semantics.

The reference is timm's `Mixup` (timm/data/mixup.py) with mode='batch': one
lambda, one choice of Mixup or CutMix and (for CutMix) one box for the whole
batch; example i is mixed with example B-1-i (the batch reversed); label
smoothing is folded into the targets as timm's `mixup_target`:

    targets = lam * smooth(y) + (1 - lam) * smooth(y reversed)
    Mixup:    images = lam * x + (1 - lam) * (x reversed)
    CutMix:   images = x with the box [y0:y1, x0:x1] taken from (x reversed);
              lam = 1 - box area / image area (when correct_lam, or always
              with cutmix_minmax)

The draws follow timm's `_params_per_batch`, `rand_bbox` and
`rand_bbox_minmax`, from a jax PRNG key instead of numpy's global generator:
with probability `prob` the batch is mixed at all; when both Mixup and CutMix
are on, CutMix is chosen with probability `switch_prob`; lam ~ Beta(alpha,
alpha) of the chosen method; the CutMix box is a square-ish cut of
int(H * sqrt(1 - lam)) x int(W * sqrt(1 - lam)) centred on a uniform pixel and
clipped to the image (or, with cutmix_minmax, a box whose sides are drawn
uniformly between min and max of the image's and which is never clipped).

Multi-device: the train step runs per device under `jax.shard_map` and each
device holds a contiguous share of the global batch's rows (mesh order over
the data axes). The partner of global row i is row B-1-i, which lives on the
mirror device (n-1-d for device d of n); `apply_mix(..., axis_name=axes)`
fetches the mirror device's rows with one `lax.ppermute` and reverses them
locally, so N devices compute exactly what one device computes on the whole
batch. The random parameters must be drawn from a key that is the same on
every device (the step key, not a per-device key), so that every device uses
the same lam and box.

Differences from timm:
  * draws come from jax.random, not numpy's global RNG: same distributions,
    different numbers;
  * lam is drawn in float32 (timm: float64). With a small alpha, a Beta draw
    within float32 rounding of 1 becomes exactly 1 and, as timm does for
    lam == 1, the batch is left as it is; in float64 it would have been mixed
    with a partner weight too small to change any pixel or label visibly;
  * an odd global batch is allowed (its middle example is mixed with itself);
    timm asserts an even one;
  * a MixupSpec with no method on (both alphas 0, no cutmix_minmax) is allowed
    and only smooths the labels; timm's Mixup fails an assertion;
  * only mode='batch' (not 'pair' or 'elem') and single-label targets.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from resnet_jax import losses
from resnet_jax.errors import ConfigError

AxisName = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class MixupSpec:
  """Mixup/CutMix settings; the fields and defaults of timm's `Mixup`.

  Attributes:
    mixup_alpha: Beta(alpha, alpha) of Mixup's lambda; 0 turns Mixup off.
    cutmix_alpha: Beta(alpha, alpha) of CutMix's lambda; 0 turns CutMix off.
    cutmix_minmax: None, or (min, max) fractions of the image side between
      which CutMix's box sides are drawn (timm's Darknet-style boxes). Turns
      CutMix on whatever cutmix_alpha is (timm sets it to 1.0; its draw of
      lambda is then replaced by the box's area).
    prob: probability that a batch is mixed at all.
    switch_prob: probability of CutMix rather than Mixup when both are on.
    correct_lam: CutMix's lambda is recomputed from the box after clipping.
    label_smoothing: smoothing of the one-hot targets before mixing.
  """
  mixup_alpha: float = 1.0
  cutmix_alpha: float = 0.0
  cutmix_minmax: tuple[float, float] | None = None
  prob: float = 1.0
  switch_prob: float = 0.5
  correct_lam: bool = True
  label_smoothing: float = 0.1

  def __post_init__(self):
    if isinstance(self.cutmix_minmax, list):
      # A tuple, so that the spec stays hashable (a static jit argument).
      object.__setattr__(self, 'cutmix_minmax', tuple(self.cutmix_minmax))
    self.validate()

  def validate(self) -> None:
    """Checks every field.

    Raises:
      ConfigError: a value out of range; the message names it and what to use.
    """
    for name in ('mixup_alpha', 'cutmix_alpha'):
      value = getattr(self, name)
      if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f'mixup: {name}={value!r} must be a number >= 0 '
                          f'(0 turns it off; e.g. 0.2 or 1.0)')
    for name in ('prob', 'switch_prob'):
      value = getattr(self, name)
      if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f'mixup: {name}={value!r} must be a probability in [0, 1]')
    if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
      raise ConfigError(f'mixup: label_smoothing={self.label_smoothing!r} must be in '
                        '[0, 1) (e.g. 0.1)')
    if not isinstance(self.correct_lam, bool):
      raise ConfigError(f'mixup: correct_lam={self.correct_lam!r} must be True or False')
    minmax = self.cutmix_minmax
    if minmax is not None and not (
        isinstance(minmax, tuple) and len(minmax) == 2 and all(_is_number(v) for v in minmax)
        and 0.0 < minmax[0] < minmax[1] <= 1.0):
      raise ConfigError(f'mixup: cutmix_minmax={minmax!r} must be None or (min, max) '
                        'with 0 < min < max <= 1 (e.g. (0.2, 0.8))')

  @property
  def use_mixup(self) -> bool:
    """Whether Mixup can be drawn."""
    return self.mixup_alpha > 0

  @property
  def use_cutmix(self) -> bool:
    """Whether CutMix can be drawn (cutmix_alpha > 0 or cutmix_minmax set)."""
    return self.cutmix_alpha > 0 or self.cutmix_minmax is not None

  @property
  def enabled(self) -> bool:
    """Whether any mixing can happen (else mix_batch only smooths the labels)."""
    return (self.use_mixup or self.use_cutmix) and self.prob > 0


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


class MixParams(NamedTuple):
  """One batch's mixing parameters: scalars, the same on every device.

  Attributes:
    lam: float32, the weight of each example's own image (Mixup) and label;
      for CutMix the lambda after timm's correction (1 - box area / image
      area when correct_lam or cutmix_minmax). 1.0 when the batch is not mixed.
    use_cutmix: bool, CutMix (True) or Mixup (False).
    box: int32 (y0, y1, x0, x1): CutMix pastes rows y0:y1, columns x0:x1 of
      the partner image (all 0 for Mixup or no mixing).
    sampled_lam: float32, the Beta draw before correction (1.0 when not mixed).
  """
  lam: jax.Array
  use_cutmix: jax.Array
  box: tuple[jax.Array, jax.Array, jax.Array, jax.Array]
  sampled_lam: jax.Array


def no_mix() -> MixParams:
  """Parameters that leave a batch unmixed (targets only smoothed)."""
  zero = jnp.zeros((), jnp.int32)
  return MixParams(lam=jnp.ones((), jnp.float32), use_cutmix=jnp.zeros((), jnp.bool_),
                   box=(zero, zero, zero, zero), sampled_lam=jnp.ones((), jnp.float32))


def sample_params(rng: jax.Array, spec: MixupSpec, image_hw: tuple[int, int]) -> MixParams:
  """Draws one batch's parameters as timm's `_params_per_batch` and CutMix boxes.

  Pass a key that is the same on every device (e.g. a fold of the step key):
  every device must mix with the same lam and box.

  Args:
    rng: PRNG key.
    spec: the settings.
    image_hw: (H, W) of the images, static.

  Returns:
    MixParams (jit- and vmap-friendly scalars).

  Raises:
    ConfigError: cutmix_minmax leaves no box size for images this small.
  """
  h, w = (int(v) for v in image_hw)
  if not spec.enabled:
    return no_mix()
  if spec.cutmix_minmax is not None:
    side_ranges = _minmax_side_ranges(spec.cutmix_minmax, h, w)  # Checked before drawing.
  k_apply, k_switch, k_lam, k_box = jax.random.split(rng, 4)
  cutmix_alpha = 1.0 if spec.cutmix_minmax is not None else spec.cutmix_alpha

  if spec.use_mixup and spec.use_cutmix:
    use_cutmix = jax.random.uniform(k_switch) < spec.switch_prob
    # One Beta draw whose alpha depends on the switch: the sampler's rejection
    # loops are the costly part to compile and run.
    alpha = jnp.where(use_cutmix, jnp.float32(cutmix_alpha), jnp.float32(spec.mixup_alpha))
  elif spec.use_mixup:
    use_cutmix = jnp.zeros((), jnp.bool_)
    alpha = jnp.float32(spec.mixup_alpha)
  else:
    use_cutmix = jnp.ones((), jnp.bool_)
    alpha = jnp.float32(cutmix_alpha)
  lam = jax.random.beta(k_lam, alpha, alpha)
  apply = jax.random.uniform(k_apply) < spec.prob
  lam = jnp.where(apply, lam.astype(jnp.float32), 1.0)
  use_cutmix = apply & use_cutmix

  if spec.use_cutmix:
    if spec.cutmix_minmax is not None:
      box = _box_minmax(k_box, side_ranges, h, w)
    else:
      box = _box_around_centre(k_box, lam, h, w)
    y0, y1, x0, x1 = box
    corrected = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / float(h * w)
    if spec.correct_lam or spec.cutmix_minmax is not None:
      cut_lam = corrected
    else:
      cut_lam = lam
    # timm skips a batch whose drawn lam is exactly 1 (nothing to mix).
    cut = use_cutmix & (lam != 1.0)
    zero = jnp.zeros((), jnp.int32)
    box = tuple(jnp.where(cut, v, zero) for v in box)
    final_lam = jnp.where(cut, cut_lam, lam)
  else:
    zero = jnp.zeros((), jnp.int32)
    box = (zero, zero, zero, zero)
    final_lam = lam
  return MixParams(lam=final_lam.astype(jnp.float32), use_cutmix=use_cutmix, box=box,
                   sampled_lam=lam)


def _box_around_centre(rng, lam, h: int, w: int):
  """timm's `rand_bbox` (margin 0): a cut of side ratio sqrt(1 - lam), clipped."""
  ratio = jnp.sqrt(1.0 - lam)
  # int() of a non-negative float truncates: floor.
  cut_h = jnp.floor(h * ratio).astype(jnp.int32)
  cut_w = jnp.floor(w * ratio).astype(jnp.int32)
  k_y, k_x = jax.random.split(rng)
  cy = jax.random.randint(k_y, (), 0, h, dtype=jnp.int32)
  cx = jax.random.randint(k_x, (), 0, w, dtype=jnp.int32)
  y0 = jnp.clip(cy - cut_h // 2, 0, h)
  y1 = jnp.clip(cy + (cut_h + 1) // 2, 0, h)
  x0 = jnp.clip(cx - cut_w // 2, 0, w)
  x1 = jnp.clip(cx + (cut_w + 1) // 2, 0, w)
  return y0, y1, x0, x1


def _minmax_side_ranges(minmax: tuple[float, float], h: int, w: int):
  """timm's box side ranges [int(s*min), int(s*max)) for both sides; checked."""
  lo_h, hi_h = int(h * minmax[0]), int(h * minmax[1])
  lo_w, hi_w = int(w * minmax[0]), int(w * minmax[1])
  if lo_h >= hi_h or lo_w >= hi_w:
    raise ConfigError(
        f'mixup: cutmix_minmax={minmax!r} leaves no box size for {h}x{w} images '
        f'(int({h}*{minmax[0]}) must be < int({h}*{minmax[1]}), same for the width); '
        'widen the range')
  return lo_h, hi_h, lo_w, hi_w


def _box_minmax(rng, side_ranges: tuple[int, int, int, int], h: int, w: int):
  """timm's `rand_bbox_minmax`: sides uniform in their ranges, box inside the image."""
  lo_h, hi_h, lo_w, hi_w = side_ranges
  k_h, k_w, k_y, k_x = jax.random.split(rng, 4)
  cut_h = jax.random.randint(k_h, (), lo_h, hi_h, dtype=jnp.int32)
  cut_w = jax.random.randint(k_w, (), lo_w, hi_w, dtype=jnp.int32)
  y0 = jax.random.randint(k_y, (), 0, h - cut_h + 1, dtype=jnp.int32)
  x0 = jax.random.randint(k_x, (), 0, w - cut_w + 1, dtype=jnp.int32)
  return y0, y0 + cut_h, x0, x0 + cut_w


def partner_rows(tree, axis_name: AxisName = None):
  """Each row's partner: row B-1-i of the global batch, for this device's rows.

  Args:
    tree: arrays whose leading axis is this device's contiguous share of the
      global batch (all devices the same size).
    axis_name: the mesh axes the batch is split over (a name or a tuple, in
      the order of the batch's sharding), or None for a batch on one device.

  Returns:
    The same structure: this device's rows of the reversed global batch.
  """
  if axis_name is not None:
    n = lax.axis_size(axis_name)
    if n > 1:
      # Device d's rows reversed are the partners of device n-1-d's rows.
      tree = lax.ppermute(tree, axis_name, perm=[(d, n - 1 - d) for d in range(n)])
  return jax.tree.map(lambda x: jnp.flip(x, axis=0), tree)


def apply_mix(images: jax.Array, targets: jax.Array, params: MixParams, *,
              axis_name: AxisName = None) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with given parameters (timm's `_mix_batch` + `mixup_target`).

  Args:
    images: NHWC float images (already normalised), this device's rows.
    targets: float [b, num_classes], one-hot or smoothed (see
      `losses.smooth_labels`), this device's rows.
    params: from `sample_params` (the same on every device).
    axis_name: mesh axes the global batch is split over (e.g.
      `parallel.DATA_AXES`) inside `shard_map`; None on one device.

  Returns:
    (images in their dtype, float32 targets), this device's rows.
  """
  targets = targets.astype(jnp.float32)
  other_images, other_targets = partner_rows((images, targets), axis_name)
  lam = params.lam.astype(jnp.float32)
  x = images.astype(jnp.float32)
  blended = x * lam + other_images.astype(jnp.float32) * (1.0 - lam)
  h, w = images.shape[1], images.shape[2]
  y0, y1, x0, x1 = params.box
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  pasted = jnp.where(inside[None, :, :, None], other_images.astype(jnp.float32), x)
  mixed = jnp.where(params.use_cutmix, pasted, blended).astype(images.dtype)
  mixed_targets = targets * lam + other_targets * (1.0 - lam)
  return mixed, mixed_targets


def mix_batch(rng: jax.Array, images: jax.Array, labels: jax.Array, spec: MixupSpec,
              num_classes: int, *, axis_name: AxisName = None
              ) -> tuple[jax.Array, jax.Array]:
  """Draws the parameters and mixes: timm's `Mixup(mode='batch')(x, target)`.

  Args:
    rng: PRNG key, the same on every device (the step key).
    images: NHWC float images (already normalised), this device's rows.
    labels: int labels [b], this device's rows.
    spec: the settings (label smoothing included).
    num_classes: width of the targets.
    axis_name: mesh axes the global batch is split over inside `shard_map`
      (e.g. `parallel.DATA_AXES`); None on one device.

  Returns:
    (mixed images, float32 targets [b, num_classes]), this device's rows; use
    `losses.softmax_cross_entropy` (or `losses.binary_cross_entropy`) on them.
  """
  targets = losses.smooth_labels(labels, num_classes, spec.label_smoothing)
  if not spec.enabled:
    return images, targets
  params = sample_params(rng, spec, images.shape[1:3])
  return apply_mix(images, targets, params, axis_name=axis_name)

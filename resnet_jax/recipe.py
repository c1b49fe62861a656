"""The modern recipes' step-level parts, resolved once: the loss, Mixup/CutMix, EMA, distillation.

`resolve(config) -> RecipeSpec` checks the fields (configs/base.py, "Recipe")
and builds the parts' own specs (`augment.mixup.MixupSpec`, `ema.EmaSpec`,
which check their values). Every part is off by default; with all of them
off the train step is the plain softmax cross-entropy step, bit for bit.
"""

import dataclasses

from resnet_jax.augment import mixup as mixup_lib
from resnet_jax import ema as ema_lib
from resnet_jax.errors import ConfigError

LOSSES = ('softmax', 'bce')


@dataclasses.dataclass(frozen=True)
class RecipeSpec:
  """The train step's recipe parts (configs/base.py documents each field).

  Attributes:
    loss: 'softmax' (cross-entropy) or 'bce' (timm's binary cross-entropy).
    label_smoothing: smoothing of the one-hot targets (folded into Mixup's).
    bce_target_threshold: with 'bce', targets above it become 1, else 0
      (timm's target_threshold; ResNet strikes back: 0.2); 0 = none.
    mixup: Mixup/CutMix settings, or None (off).
    ema: the weights' EMA settings, or None (off).
    teacher: a checkpoint whose model is distilled into this one, or ''.
    distill_temperature: the distillation's softmax temperature T.
  """
  loss: str = 'softmax'
  label_smoothing: float = 0.0
  bce_target_threshold: float = 0.0
  mixup: mixup_lib.MixupSpec | None = None
  ema: ema_lib.EmaSpec | None = None
  teacher: str = ''
  distill_temperature: float = 1.0

  @property
  def plain(self) -> bool:
    """Whether the step is the plain cross-entropy one (no recipe part on)."""
    return self.loss == 'softmax' and self.mixup is None and not self.teacher


def resolve(config) -> RecipeSpec:
  """The checked RecipeSpec of a config; ConfigError (one line) for a bad field."""
  if config.loss not in LOSSES:
    raise ConfigError(f'loss={config.loss!r} is not valid; choose one of {LOSSES}')
  if not 0 <= config.label_smoothing < 1:
    raise ConfigError(f'label_smoothing={config.label_smoothing} must be in [0, 1) '
                      '(e.g. 0.1)')
  if not 0 <= config.bce_target_threshold < 1 or (
      config.bce_target_threshold and config.loss != 'bce'):
    raise ConfigError(f'bce_target_threshold={config.bce_target_threshold} applies to '
                      "loss='bce' only and must be in [0, 1) (ResNet strikes back: 0.2)")
  minmax = tuple(config.cutmix_minmax) or None
  mix = None
  if config.mixup_alpha or config.cutmix_alpha or minmax:
    mix = mixup_lib.MixupSpec(
        mixup_alpha=float(config.mixup_alpha), cutmix_alpha=float(config.cutmix_alpha),
        cutmix_minmax=minmax, prob=float(config.mixup_prob),
        switch_prob=float(config.mixup_switch_prob),
        label_smoothing=float(config.label_smoothing))
  ema = None
  if config.ema_decay:
    ema = ema_lib.EmaSpec(decay=float(config.ema_decay), use_warmup=bool(config.ema_warmup),
                          warmup_gamma=float(config.ema_warmup_gamma),
                          warmup_power=float(config.ema_warmup_power))
  if config.distill_temperature <= 0:
    raise ConfigError(f'distill_temperature={config.distill_temperature} must be > 0 '
                      '(e.g. 2)')
  return RecipeSpec(loss=config.loss, label_smoothing=float(config.label_smoothing),
                    bce_target_threshold=float(config.bce_target_threshold), mixup=mix,
                    ema=ema, teacher=config.teacher,
                    distill_temperature=float(config.distill_temperature))

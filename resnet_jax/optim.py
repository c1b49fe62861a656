"""The optimizer and learning-rate schedule (OptimSpec, from the config), from optax pieces."""

import dataclasses

import jax
import optax

from resnet_jax.errors import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'nesterov')
SCHEDULES = ('constant', 'piecewise', 'cosine')
WEIGHT_DECAY_TYPES = ('l2', 'decoupled')


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """The optimizer and schedule fields of the config, checked (configs/base.py)."""
  optimizer: str
  learning_rate: float
  momentum: float
  weight_decay: float
  weight_decay_type: str
  schedule: str
  warmup_steps: int
  warmup_epochs: float
  lr_boundaries_steps: tuple[int, ...]
  lr_boundaries_epochs: tuple[float, ...]
  lr_decay_factor: float
  grad_clip_norm: float
  label_smoothing: float


def resolve(config) -> OptimSpec:
  """The checked OptimSpec of a config; ConfigError (one line) for a bad field."""
  if config.learning_rate <= 0:
    raise ConfigError(
        f'learning_rate={config.learning_rate} must be positive (e.g. 1e-3 for adam, '
        '0.1 for sgd)')
  if config.schedule not in SCHEDULES:
    raise ConfigError(
        f'unknown schedule {config.schedule!r}; valid schedules: {", ".join(SCHEDULES)}')
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(
        f'unknown optimizer {config.optimizer!r}; valid optimizers: {", ".join(OPTIMIZERS)}')
  if config.weight_decay_type not in WEIGHT_DECAY_TYPES:
    raise ConfigError(
        f'unknown weight_decay_type {config.weight_decay_type!r}; valid: '
        f'{", ".join(WEIGHT_DECAY_TYPES)}')
  for name in ('weight_decay', 'grad_clip_norm', 'label_smoothing', 'warmup_steps',
               'warmup_epochs'):
    if config[name] < 0:
      raise ConfigError(f'{name}={config[name]} must be >= 0')
  if config.label_smoothing >= 1:
    raise ConfigError(f'label_smoothing={config.label_smoothing} must be below 1')
  return OptimSpec(
      optimizer=config.optimizer, learning_rate=float(config.learning_rate),
      momentum=float(config.momentum), weight_decay=float(config.weight_decay),
      weight_decay_type=config.weight_decay_type, schedule=config.schedule,
      warmup_steps=int(config.warmup_steps), warmup_epochs=float(config.warmup_epochs),
      lr_boundaries_steps=tuple(int(b) for b in config.lr_boundaries_steps),
      lr_boundaries_epochs=tuple(float(b) for b in config.lr_boundaries_epochs),
      lr_decay_factor=float(config.lr_decay_factor),
      grad_clip_norm=float(config.grad_clip_norm),
      label_smoothing=float(config.label_smoothing))


def create_learning_rate_schedule(spec: OptimSpec, steps_per_epoch: int,
                                  total: int) -> optax.Schedule:
  """The schedule named by `spec.schedule`, with optional linear warmup.

  Args:
    spec: the optimisation spec.
    steps_per_epoch: optimizer steps in one epoch, to convert epoch lengths.
    total: the run's number of training steps.

  Returns:
    An optax schedule mapping the step to the learning rate.
  """
  warmup = (int(round(spec.warmup_epochs * steps_per_epoch))
            if spec.warmup_epochs > 0 else spec.warmup_steps)
  if warmup >= total:
    raise ConfigError(
        f'warmup of {warmup} steps must be shorter than the {total} training steps: '
        'lower --config.warmup_steps (or warmup_epochs)')
  peak = spec.learning_rate

  if spec.schedule == 'cosine':
    if warmup == 0:
      return optax.cosine_decay_schedule(peak, decay_steps=total)
    # Decays to 0 at `total` (decay_steps counts the warmup too).
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total,
        end_value=0.0)

  if spec.schedule == 'constant':
    main = optax.constant_schedule(peak)
  else:
    if spec.lr_boundaries_epochs:
      boundaries = [int(round(e * steps_per_epoch)) for e in spec.lr_boundaries_epochs]
    else:
      boundaries = list(spec.lr_boundaries_steps)
    if sorted(boundaries) != boundaries or any(b <= 0 for b in boundaries):
      raise ConfigError(f'lr boundaries {boundaries} must be positive and increasing')
    # Boundaries are absolute steps; the main schedule starts counting after warmup.
    main = optax.piecewise_constant_schedule(
        peak, {b - warmup: spec.lr_decay_factor for b in boundaries if b > warmup})
  if warmup == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], boundaries=[warmup])


def kernel_mask(params):
  """True for conv and dense kernels: the only parameters weight decay applies to."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def create_optimizer(spec: OptimSpec,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer named by `spec.optimizer`, with masked weight decay and clipping.

  Weight decay applies to kernels only (not BatchNorm scales/biases nor dense
  biases). 'l2' adds wd * w to the gradient before the optimizer (the paper's L2
  regularisation); 'decoupled' applies it after the update direction, scaled by
  the learning rate (AdamW; `adamw` always decouples).
  """
  wd = spec.weight_decay
  decoupled = spec.optimizer == 'adamw' or spec.weight_decay_type == 'decoupled'

  if spec.optimizer in ('adam', 'adamw'):
    direction = optax.scale_by_adam(b1=spec.momentum)
  else:
    direction = optax.trace(decay=spec.momentum,
                            nesterov=spec.optimizer == 'nesterov')

  chain = []
  if spec.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(spec.grad_clip_norm))
  if wd > 0 and not decoupled:
    chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
  chain.append(direction)
  if wd > 0 and decoupled:
    chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
  chain.append(optax.scale_by_learning_rate(learning_rate_fn))
  return optax.chain(*chain)

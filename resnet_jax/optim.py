"""Optimizer and learning-rate schedule from a config, built from optax pieces."""

import jax
import ml_collections
import optax

from resnet_jax.errors import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'nesterov')
SCHEDULES = ('constant', 'piecewise', 'cosine')
WEIGHT_DECAY_TYPES = ('l2', 'decoupled')


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the optimisation fields; raises ConfigError (via validation.validate)."""
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
  for name in ('weight_decay', 'grad_clip_norm', 'label_smoothing'):
    if config[name] < 0:
      raise ConfigError(f'{name}={config[name]} must be >= 0')
  if config.num_train_steps == 0 or config.num_train_steps < -1:
    raise ConfigError(
        f'num_train_steps={config.num_train_steps}: give a positive number of steps, '
        'or -1 to train for num_epochs')


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Total training steps: `num_train_steps`, or `num_epochs` epochs when it is -1."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_train_steps != -1:
    raise ConfigError(
        f'num_train_steps={config.num_train_steps}: give a positive number of steps, '
        'or -1 to train for num_epochs')
  if config.num_epochs <= 0:
    raise ConfigError(f'num_epochs={config.num_epochs} must be positive')
  return max(1, int(round(config.num_epochs * steps_per_epoch)))


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  steps_per_epoch: int) -> optax.Schedule:
  """The schedule named by `config.schedule`, with optional linear warmup.

  Args:
    config: the run config (learning_rate, schedule, warmup_*, lr_boundaries_*,
      lr_decay_factor, num_train_steps/num_epochs).
    steps_per_epoch: optimizer steps in one epoch, to convert epoch lengths.

  Returns:
    An optax schedule mapping the step to the learning rate.
  """
  total = num_train_steps(config, steps_per_epoch)
  warmup = (int(round(config.warmup_epochs * steps_per_epoch))
            if config.warmup_epochs > 0 else int(config.warmup_steps))
  if warmup < 0 or warmup >= total:
    raise ConfigError(
        f'warmup of {warmup} steps must be shorter than the {total} training steps: '
        'lower --config.warmup_steps (or warmup_epochs)')
  peak = float(config.learning_rate)

  if config.schedule == 'cosine':
    if warmup == 0:
      return optax.cosine_decay_schedule(peak, decay_steps=total)
    # Decays to 0 at `total` (decay_steps counts the warmup too).
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total,
        end_value=0.0)

  if config.schedule == 'constant':
    main = optax.constant_schedule(peak)
  else:
    if config.lr_boundaries_epochs:
      boundaries = [int(round(e * steps_per_epoch)) for e in config.lr_boundaries_epochs]
    else:
      boundaries = [int(b) for b in config.lr_boundaries_steps]
    if sorted(boundaries) != boundaries or any(b <= 0 for b in boundaries):
      raise ConfigError(f'lr boundaries {boundaries} must be positive and increasing')
    # Boundaries are absolute steps; the main schedule starts counting after warmup.
    main = optax.piecewise_constant_schedule(
        peak, {b - warmup: config.lr_decay_factor for b in boundaries if b > warmup})
  if warmup == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], boundaries=[warmup])


def kernel_mask(params):
  """True for conv and dense kernels: the only parameters weight decay applies to."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer named by `config.optimizer`, with masked weight decay and clipping.

  Weight decay applies to kernels only (not BatchNorm scales/biases nor dense
  biases). 'l2' adds wd * w to the gradient before the optimizer (the paper's L2
  regularisation); 'decoupled' applies it after the update direction, scaled by
  the learning rate (AdamW; `adamw` always decouples).
  """
  wd = float(config.weight_decay)
  decoupled = config.optimizer == 'adamw' or config.weight_decay_type == 'decoupled'

  if config.optimizer in ('adam', 'adamw'):
    direction = optax.scale_by_adam(b1=config.momentum)
  else:
    direction = optax.trace(decay=config.momentum,
                            nesterov=config.optimizer == 'nesterov')

  chain = []
  if config.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if wd > 0 and not decoupled:
    chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
  chain.append(direction)
  if wd > 0 and decoupled:
    chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
  chain.append(optax.scale_by_learning_rate(learning_rate_fn))
  return optax.chain(*chain)

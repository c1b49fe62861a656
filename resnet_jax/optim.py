"""The optimizer and learning-rate schedule (OptimSpec, from the config), from optax pieces.

Optimizers: adam, adamw, sgd, nesterov, and timm's lamb and lars (as
`timm.optim.create_optimizer_v2(model, 'lamb' | 'lars', lr, weight_decay)`
builds them, which ResNet strikes back trains with); `create_optimizer`
documents each. Weight decay, and LAMB's and LARS's layer-wise trust ratio,
apply to conv and dense kernels only (`kernel_mask`), never to BatchNorm
scales and biases nor dense biases: timm's `param_groups_weight_decay` groups
(1-d parameters and biases excluded) for every ResNet of this project.

Gradient accumulation (`grad_accumulation_steps` = k > 1) happens inside the
train step (train.py): it computes the gradient of k micro-batches of
batch_size / k in turn and applies their mean once, so the optimizer, the
schedule, the data and every length and period are those of k = 1.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'nesterov', 'lamb', 'lars')
SCHEDULES = ('constant', 'piecewise', 'cosine')
WEIGHT_DECAY_TYPES = ('l2', 'decoupled')
# eps when the config leaves it unset: each optimizer's own default (torch's
# Adam/AdamW, timm's Lamb and Lars). sgd and nesterov have none.
DEFAULT_EPS = {'adam': 1e-8, 'adamw': 1e-8, 'lamb': 1e-6, 'lars': 1e-8}


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
  beta2: float
  eps: float
  lamb_max_grad_norm: float
  lars_trust_coefficient: float
  grad_accumulation_steps: int


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


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
  if config.optimizer in ('lamb', 'lars') and config.weight_decay_type != 'l2':
    raise ConfigError(
        f'weight_decay_type={config.weight_decay_type!r} does not apply to '
        f'{config.optimizer}: its weight decay is part of the layer-wise update, as in '
        "timm; leave weight_decay_type='l2'")
  for name in ('weight_decay', 'grad_clip_norm', 'warmup_steps', 'warmup_epochs',
               'lamb_max_grad_norm'):
    if config[name] < 0:
      raise ConfigError(f'{name}={config[name]} must be >= 0')
  for name in ('momentum', 'beta2'):
    if not 0 <= config[name] < 1:
      raise ConfigError(f'{name}={config[name]} must be in [0, 1) (e.g. 0.9 or 0.999)')
  eps = config.eps if config.eps is not None else DEFAULT_EPS.get(config.optimizer, 0.0)
  if eps < 0:
    raise ConfigError(f'eps={eps} must be >= 0 (e.g. 1e-8), or unset for '
                      f"{config.optimizer}'s default")
  if config.lars_trust_coefficient <= 0:
    raise ConfigError(f'lars_trust_coefficient={config.lars_trust_coefficient} must be '
                      'positive (e.g. 0.001)')
  k = config.grad_accumulation_steps
  if not _is_int(k) or k < 1:
    raise ConfigError(f'grad_accumulation_steps={k!r} must be an integer >= 1 (1 = off)')
  return OptimSpec(
      optimizer=config.optimizer, learning_rate=float(config.learning_rate),
      momentum=float(config.momentum), weight_decay=float(config.weight_decay),
      weight_decay_type=config.weight_decay_type, schedule=config.schedule,
      warmup_steps=int(config.warmup_steps), warmup_epochs=float(config.warmup_epochs),
      lr_boundaries_steps=tuple(int(b) for b in config.lr_boundaries_steps),
      lr_boundaries_epochs=tuple(float(b) for b in config.lr_boundaries_epochs),
      lr_decay_factor=float(config.lr_decay_factor),
      grad_clip_norm=float(config.grad_clip_norm),
      beta2=float(config.beta2),
      eps=float(eps), lamb_max_grad_norm=float(config.lamb_max_grad_norm),
      lars_trust_coefficient=float(config.lars_trust_coefficient),
      grad_accumulation_steps=k)


def create_learning_rate_schedule(spec: OptimSpec, steps_per_epoch: int,
                                  total: int) -> optax.Schedule:
  """The schedule named by `spec.schedule`, with optional linear warmup.

  The schedule's step is the optimizer update (with gradient accumulation,
  one per grad_accumulation_steps micro-batches): optax's schedule state only
  advances when an update is applied.

  Args:
    spec: the optimisation spec.
    steps_per_epoch: optimizer updates in one epoch, to convert epoch lengths.
    total: the run's number of optimizer updates.

  Returns:
    An optax schedule mapping the update step to the learning rate.
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
  """True for conv and dense kernels: the only parameters weight decay applies to.

  For a ResNet these are exactly the parameters timm's
  `param_groups_weight_decay` decays (more than 1-d, not named bias).
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def scale_by_lars_trust_ratio(weight_decay: float, trust_coefficient: float,
                              eps: float) -> optax.GradientTransformation:
  """LARS's layer-wise step: (g + wd w) * trust_coefficient |w| / (|g| + wd |w| + eps).

  The ratio of the LARS paper (You et al. 2017) and timm's Lars, 1 where |w|
  or |g| is 0, with the weight decay added to the gradient it scales. It is
  the one piece optax lacks: `optax.lars` takes the ratio from |g + wd w|
  instead of |g| + wd |w|.
  """

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError('scale_by_lars_trust_ratio needs the params: pass them to update')

    def scale(g, w):
      w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
      ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
      ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
      return (g + weight_decay * w) * ratio.astype(g.dtype)

    return jax.tree.map(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def create_optimizer(spec: OptimSpec,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer named by `spec.optimizer`, with masked weight decay and clipping.

  Weight decay applies to kernels only (not BatchNorm scales/biases nor dense
  biases). `grad_clip_norm` clips the gradient's global norm first (timm's
  --clip-grad). Then:

  - adam, adamw, sgd, nesterov: 'l2' weight decay adds wd * w to the gradient
    before the optimizer (the paper's L2 regularisation); 'decoupled' adds it
    to the update direction, scaled by the learning rate (AdamW; `adamw`
    always decouples).
  - lamb (timm's Lamb): the gradient clipped to a global norm of
    lamb_max_grad_norm, Adam's bias-corrected direction m / (sqrt(v) + eps),
    plus wd * w on kernels, each kernel's step scaled by |w| / |step|.
  - lars (timm's Lars): each kernel's gradient plus wd * w, scaled by
    `scale_by_lars_trust_ratio`; then heavy-ball momentum and the learning
    rate, as torch's SGD (the learning rate scales the momentum buffer, not
    what enters it).

  As timm does (always_adapt=False), LAMB and LARS adapt only what weight
  decay applies to: with weight_decay=0 lamb is Adam with clipping and lars
  is SGD.
  """
  wd = spec.weight_decay
  chain = []
  if spec.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(spec.grad_clip_norm))

  if spec.optimizer == 'lamb':
    if spec.lamb_max_grad_norm > 0:
      chain.append(optax.clip_by_global_norm(spec.lamb_max_grad_norm))
    chain.append(optax.scale_by_adam(b1=spec.momentum, b2=spec.beta2, eps=spec.eps))
    if wd > 0:
      chain += [optax.add_decayed_weights(wd, mask=kernel_mask),
                optax.masked(optax.scale_by_trust_ratio(), kernel_mask)]
  elif spec.optimizer == 'lars':
    if wd > 0:
      chain.append(optax.masked(scale_by_lars_trust_ratio(
          wd, spec.lars_trust_coefficient, spec.eps), kernel_mask))
    chain.append(optax.trace(decay=spec.momentum))
  else:
    decoupled = spec.optimizer == 'adamw' or spec.weight_decay_type == 'decoupled'
    if spec.optimizer in ('adam', 'adamw'):
      direction = optax.scale_by_adam(b1=spec.momentum, b2=spec.beta2, eps=spec.eps)
    else:
      direction = optax.trace(decay=spec.momentum,
                              nesterov=spec.optimizer == 'nesterov')
    if wd > 0 and not decoupled:
      chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
    chain.append(direction)
    if wd > 0 and decoupled:
      chain.append(optax.add_decayed_weights(wd, mask=kernel_mask))
  chain.append(optax.scale_by_learning_rate(learning_rate_fn))

  return optax.chain(*chain)


"""Exponential moving average of the weights and BatchNorm statistics (timm's ModelEmaV3).

timm's ModelEmaV3 (timm/utils/model_ema.py) keeps a copy of the model, made
when it is created, and after every optimizer update calls
`update(model, step=num_updates)`:

    d = get_decay(step)
    ema = lerp(ema, model, 1 - d)          # = ema * d + (1 - d) * model

for every floating-point entry of the model's state_dict: the parameters AND
the buffers, so BatchNorm's running mean and variance are averaged the same
way as the weights (its default, exclude_buffers=False; with
exclude_buffers=True it copies the buffers instead). Integer buffers
(BatchNorm's num_batches_tracked) are copied. Here the same holds for any
pytree: pass {'params': ..., 'batch_stats': ...} and every floating leaf is
averaged, every integer leaf copied (flax's BatchNorm has no integer
statistics, so in practice everything is averaged).

get_decay(step), with s = max(0, step - update_after_step - 1):
    s == 0         -> 0 (the EMA becomes a copy of the model)
    use_warmup     -> clip(1 - (1 + s / warmup_gamma) ** -warmup_power,
                           max=decay, then min=min_decay)
    otherwise      -> decay
`step` is timm's num_updates: the number of optimizer updates done, counting
the one just done (1 after the first update, i.e. the train state's step
after `apply_gradients`). So the first update (and the first
update_after_step + 1 of them) copies the model, whatever the decay.

Why not optax.ema: it is a GradientTransformation that averages the updates it
is fed, starting from zeros with an optional bias correction (debias) and a
fixed decay. timm's EMA starts from a copy of the model, follows a schedule
of the step (warmup, update_after_step), and copies integer leaves; feeding
params through optax.ema gives different numbers for the first thousands of
steps. The update itself is optax's: `optax.tree.update_moment(model, ema,
decay, order=1)` = (1 - decay) * model + decay * ema, used here on float32
copies of the leaves.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class EmaSpec:
  """EMA settings; the arguments and defaults of timm's ModelEmaV3.

  Attributes:
    decay: the decay (the largest, with warmup), in [0, 1].
    min_decay: with warmup, the smallest decay after the first update(s).
    update_after_step: updates before the averaging starts (the EMA copies
      the model until then).
    use_warmup: ramp the decay up as 1 - (1 + s / warmup_gamma) ** -warmup_power.
    warmup_gamma: the ramp's inverse gamma, > 0.
    warmup_power: the ramp's power, > 0 (2/3 for runs of a million or more
      steps, 3/4 for shorter ones, as timm's docstring suggests).
  """
  decay: float = 0.9999
  min_decay: float = 0.0
  update_after_step: int = 0
  use_warmup: bool = False
  warmup_gamma: float = 1.0
  warmup_power: float = 2 / 3

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Checks every field.

    Raises:
      ConfigError: a value out of range; the message names it and what to use.
    """
    for name in ('decay', 'min_decay'):
      value = getattr(self, name)
      if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f'ema: {name}={value!r} must be in [0, 1] (e.g. 0.9999)')
    if self.min_decay > self.decay:
      raise ConfigError(f'ema: min_decay={self.min_decay!r} must be <= '
                        f'decay={self.decay!r}')
    if (isinstance(self.update_after_step, bool)
        or not isinstance(self.update_after_step, int) or self.update_after_step < 0):
      raise ConfigError(f'ema: update_after_step={self.update_after_step!r} must be an '
                        'integer >= 0')
    if not isinstance(self.use_warmup, bool):
      raise ConfigError(f'ema: use_warmup={self.use_warmup!r} must be True or False')
    for name in ('warmup_gamma', 'warmup_power'):
      value = getattr(self, name)
      if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f'ema: {name}={value!r} must be > 0 (e.g. 1.0 for '
                          'warmup_gamma, 2/3 or 3/4 for warmup_power)')


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def ema_decay(step: jax.typing.ArrayLike, spec: EmaSpec) -> jax.Array:
  """The decay of the update after optimizer update number `step` (timm's get_decay).

  Args:
    step: updates done, counting the current one (1 for the first); an int or
      a traced int scalar.
    spec: the settings.

  Returns:
    float32 scalar in [0, 1]; 0 means "copy the model".
  """
  s = jnp.maximum(0, jnp.asarray(step, jnp.int32) - spec.update_after_step - 1)
  if spec.use_warmup:
    ramp = 1.0 - (1.0 + s.astype(jnp.float32) / spec.warmup_gamma) ** -spec.warmup_power
    decay = jnp.maximum(jnp.minimum(ramp, spec.decay), spec.min_decay)
  else:
    decay = jnp.full((), spec.decay, jnp.float32)
  return jnp.where(s <= 0, 0.0, decay).astype(jnp.float32)


def init_ema(tree: Any) -> Any:
  """The EMA's first value: a copy of `tree`, floating leaves in float32.

  timm copies the model when ModelEmaV3 is created; keeping the copy in
  float32 lets a bfloat16/float16 model's EMA accumulate updates far smaller
  than those formats resolve (timm's dtype=torch.float32 option).
  """
  return jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float32) if _floating(x) else jnp.asarray(x), tree)


def update_ema(ema_tree: Any, tree: Any, decay: jax.typing.ArrayLike) -> Any:
  """One EMA update: ema * decay + (1 - decay) * tree, leaf by leaf.

  Floating leaves are combined in float32 and stored in the EMA leaf's dtype
  (float32 from `init_ema`); integer and boolean leaves are copied from
  `tree` (timm copies non-floating buffers). Pure and jit-friendly: `decay`
  may be traced (e.g. `ema_decay(state.step, spec)`).

  Args:
    ema_tree: the current average (same structure as `tree`).
    tree: the model's current values (params, batch_stats, ...).
    decay: scalar in [0, 1].

  Returns:
    The new average.
  """
  decay = jnp.asarray(decay, jnp.float32)

  def update(ema, new):
    if not _floating(ema):
      return jnp.asarray(new).astype(jnp.asarray(ema).dtype)
    moved = optax.tree.update_moment(jnp.asarray(new, jnp.float32),
                                     jnp.asarray(ema, jnp.float32), decay, order=1)
    return moved.astype(jnp.asarray(ema).dtype)

  return jax.tree.map(update, ema_tree, tree)


def _floating(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)

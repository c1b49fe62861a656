"""The config, resolved once into small frozen specs: the one check of a whole config.

Every command calls `resolve(config)` first, before it reads data, compiles
or writes anything; below it, code takes a spec (or the fields it needs),
never the ConfigDict. Each spec is built, and its fields checked, by the
module that uses it, cheapest first, so a typo fails in milliseconds:

    RunSpec
      model   models.ResNetSpec   models.resolve_spec(config.model)
      data    data.DataSpec       data.resolve(config)
      optim   optim.OptimSpec     optim.resolve(config)
      recipe  recipe.RecipeSpec   recipe.resolve(config) (loss, Mixup/CutMix, EMA, teacher)
      loop    LoopSpec            here (the training loop's periods and length)

What only the dataset can tell (its size against the batch, its image shape)
is checked when it is opened, still before any compilation.
"""

import dataclasses

import ml_collections
import numpy as np

from resnet_jax import data
from resnet_jax import models
from resnet_jax import optim
from resnet_jax import parallel
from resnet_jax import recipe
from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The training loop: length, periods, retention, warm start (configs/base.py)."""
  num_train_steps: int
  num_epochs: float
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  keep_checkpoints: int
  init_from: str
  init_from_skip_head: bool
  init_from_ema: bool = False

  def total_steps(self, steps_per_epoch: int) -> int:
    """num_train_steps, or num_epochs epochs when it is -1."""
    if self.num_train_steps > 0:
      return self.num_train_steps
    return max(1, int(round(self.num_epochs * steps_per_epoch)))


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A whole run's config, resolved and checked."""
  model: models.ResNetSpec
  data: data.DataSpec
  optim: optim.OptimSpec
  loop: LoopSpec
  recipe: recipe.RecipeSpec
  dtype: str
  cpu_fast_paths: bool
  bn_group_size: int


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _loop(config: ml_collections.ConfigDict) -> LoopSpec:
  if not _is_int(config.log_every_steps) or config.log_every_steps < 1:
    raise ConfigError(f'log_every_steps={config.log_every_steps!r} must be an integer >= 1')
  for name in ('eval_every_steps', 'checkpoint_every_steps'):
    value = config[name]
    if not _is_int(value) or (value < 1 and value != -1):
      raise ConfigError(f'{name}={value!r} must be a positive number of steps, or -1 '
                        '(once per epoch)')
  if not _is_int(config.keep_checkpoints) or config.keep_checkpoints < 1:
    raise ConfigError(f'keep_checkpoints={config.keep_checkpoints!r} must be an integer >= 1')
  if not _is_int(config.num_train_steps) or (
      config.num_train_steps == 0 or config.num_train_steps < -1):
    raise ConfigError(f'num_train_steps={config.num_train_steps}: give a positive number '
                      'of steps, or -1 to train for num_epochs')
  if config.num_train_steps == -1 and config.num_epochs <= 0:
    raise ConfigError(f'num_epochs={config.num_epochs} must be positive')
  return LoopSpec(
      num_train_steps=config.num_train_steps, num_epochs=float(config.num_epochs),
      log_every_steps=config.log_every_steps, eval_every_steps=config.eval_every_steps,
      checkpoint_every_steps=config.checkpoint_every_steps,
      keep_checkpoints=config.keep_checkpoints, init_from=config.init_from,
      init_from_skip_head=bool(config.init_from_skip_head),
      init_from_ema=bool(config.init_from_ema))


def resolve(config: ml_collections.ConfigDict) -> RunSpec:
  """The RunSpec of a config; ConfigError (one line: what, and what to do) if any field is bad."""
  dtype = models.canonical_dtype(config.dtype)
  model = models.resolve_spec(config.model)
  data_spec = data.resolve(config)
  optim_spec = optim.resolve(config)
  loop = _loop(config)
  recipe_spec = recipe.resolve(config)
  layout = parallel.batch_layout(data_spec.batch_size, 'batch_size')
  k = optim_spec.grad_accumulation_steps
  if layout.per_device % k:
    raise ConfigError(f'grad_accumulation_steps={k} must divide the {layout.per_device} '
                      f'examples each device gets of batch_size={data_spec.batch_size}')
  if k > 1 and np.dtype(dtype).name == 'float16':
    raise ConfigError('grad_accumulation_steps > 1 with dtype=float16 is not supported '
                      '(its loss scale skips whole steps): use --config.dtype=bfloat16')
  parallel.batch_layout(data_spec.eval_batch_size,
                        'eval_batch_size' if config.eval_batch_size else 'batch_size')
  bn_group = config.model.get('bn_group_size', 0)
  parallel.bn_group_size(bn_group)
  return RunSpec(model=model, data=data_spec, optim=optim_spec, loop=loop, recipe=recipe_spec,
                 dtype=np.dtype(dtype).name,
                 cpu_fast_paths=bool(config.cpu_fast_paths), bn_group_size=bn_group)

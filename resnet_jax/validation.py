"""One check of a whole config, before any work starts.

Every command (`main`, `evaluate`, `benchmark`, sweeps through `main`) calls
`validate(config)` once, through `train.setup_experiment`, before it reads
data, compiles or writes anything. Each rule lives in the module whose
fields it checks (the model's in `models.registry`, the optimizer's in
`optim`, the data's in `data.meta`, the device layout's in `parallel`); this
module only calls them, cheapest first, so a typo fails in milliseconds.
"""

import ml_collections

from resnet_jax import models
from resnet_jax import optim
from resnet_jax import parallel
from resnet_jax.data import meta as data_meta
from resnet_jax.errors import ConfigError


def _periods(config: ml_collections.ConfigDict) -> None:
  """Loop periods: positive steps, or -1 for once per epoch where allowed."""
  if not _is_int(config.log_every_steps) or config.log_every_steps < 1:
    raise ConfigError(f'log_every_steps={config.log_every_steps!r} must be an integer >= 1')
  for name in ('eval_every_steps', 'checkpoint_every_steps'):
    value = config[name]
    if not _is_int(value) or (value < 1 and value != -1):
      raise ConfigError(f'{name}={value!r} must be a positive number of steps, or -1 '
                        '(once per epoch)')
  keep = config.keep_checkpoints
  if not _is_int(keep) or keep < 1:
    raise ConfigError(f'keep_checkpoints={keep!r} must be an integer >= 1')
  if not _is_int(config.num_eval_batches) or (
      config.num_eval_batches < 1 and config.num_eval_batches != -1):
    raise ConfigError(f'num_eval_batches={config.num_eval_batches!r} must be a positive '
                      'number of batches, or -1 (the whole eval split)')
  if not _is_int(config.seed):
    raise ConfigError(f'seed={config.seed!r} must be an integer')


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line: what is wrong and what to do) for any bad field.

  Checks every field the run reads, except what only the dataset can tell
  (its size against the batch, its image shape), which `data.prepare` checks.
  """
  models.canonical_dtype(config.dtype)
  models.resolve_spec(config.model)
  optim.validate(config)
  data_meta.validate(config)
  _periods(config)
  parallel.train_layout(config)
  parallel.eval_layout(config)
  parallel.bn_group_size(config)

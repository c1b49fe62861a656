"""The config a run recorded in its workdir, to rerun or evaluate it with overrides.

Argument (after ':'): the run's workdir (or its checkpoints/ or a step directory).

    python -m resnet_jax.evaluate --config=configs/stored.py:runs/c56 \
        --checkpoint=runs/c56 --config.data_dir=/data/tensorflow_datasets

Expected: the run's own config.json, with the overrides applied (`evaluate`
without --config uses it as it is).
"""

from resnet_jax import configlib
from resnet_jax.errors import ConfigError


def get_config(arg=None):
  if not arg:
    raise ConfigError(
        'configs/stored.py needs the workdir after a colon, e.g. '
        '--config=configs/stored.py:runs/c56')
  return configlib.load_stored(arg)

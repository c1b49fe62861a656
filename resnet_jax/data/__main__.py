r"""Prepares (or indexes) a config's dataset once, then prints its DatasetMeta as JSON.

    python -m resnet_jax.data --config=configs/cifar10.py \
        [--config.data_dir=DIR] [--config.manual_dir=DIR] \
        [--config.dataset=folder:PATH]

Preparing a registered tfds dataset needs TensorFlow (pip install -e '.[tfds]') and
downloads only with download=True (the default); offline it says within seconds what
to do instead (one line on stderr, exit status 2).
"""

import dataclasses
import json

from absl import flags
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax import data
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The data command's flags (see cli.run)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  inputs = data.open_input(data.resolve(FLAGS.config), prepare=True)
  print(json.dumps({**dataclasses.asdict(inputs.meta), 'resident': inputs.resident}),
        flush=True)
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)

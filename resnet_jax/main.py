r"""Trains and evaluates a ResNet: the command researchers run every day.

    python -m resnet_jax.main --config=configs/cifar10.py --workdir=runs/c20
    python -m resnet_jax.main --config=configs/cifar10.py:depth=56,shortcut=A,recipe=paper \
        --workdir=runs/c56 --config.seed=1

Rerunning the same command with the same workdir resumes from its newest
checkpoint; a different config is refused (the fields that differ are listed)
unless it only lengthens training or changes logging, evaluation or
checkpoint periods, or --allow_config_change is given. A workdir whose
checkpoints are all unusable is refused unless --allow_fresh_start is given.
Only one run at a time holds a workdir. Exit status (resnet_jax/errors.py):
0 finished; 75 stopped by SIGTERM/SIGINT, after saving a checkpoint when it
had trained since the last one (rerun to resume); 130 a second Ctrl-C (quit at
once); 2 bad input or resources, with a one-line reason (also: out of memory,
a full disk, a workdir in use, no usable checkpoint); 1 a non-finite loss.
"""

from absl import flags
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax import errors
from resnet_jax import signals

FLAGS = flags.FLAGS


def define_flags() -> None:
  """main's flags (see cli.run)."""
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the config.')
  flags.DEFINE_boolean('allow_config_change', False,
                       'Resume a workdir whose checkpoints were written under another '
                       'config (the differences are logged and recorded).')
  flags.DEFINE_boolean('allow_fresh_start', False,
                       'Train from step 0 in a workdir whose checkpoints are all '
                       'unusable (moved aside as checkpoints/corrupt-STEP); without it '
                       'such a workdir is refused. A usable checkpoint is always resumed.')
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/cifar10.py:depth=56,shortcut=A.',
      lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  # First: a signal during the imports, the multi-host start or anything after
  # is handled (at once before the first step, after a save from then on).
  with signals.SignalFlag(stop_at_once=True, second_interrupt_raises=True) as stop:
    stop.check()  # A signal during flag parsing.
    if len(argv) > 1:
      raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
    config = FLAGS.config
    cli.maybe_initialize_distributed(config)
    from resnet_jax import train  # pylint: disable=g-import-not-at-top
    result = train.train_and_evaluate(config, FLAGS.workdir,
                                      allow_config_change=FLAGS.allow_config_change,
                                      allow_fresh_start=FLAGS.allow_fresh_start,
                                      stop=stop)
  summary = ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                      for k, v in result.items())
  print(summary)
  return errors.EXIT_PREEMPTED if result['preempted'] else errors.EXIT_OK


if __name__ == '__main__':
  cli.run(main, define_flags, stop_on_signals=True)

"""What every command-line entry point shares: user-facing errors and multi-host set-up."""

import functools
import sys
from typing import Callable

from absl import app
from absl import logging

from resnet_jax.configlib import ConfigError

# Exit status for bad input (like argparse): the message says what to change.
EXIT_BAD_INPUT = 2


def user_errors(main: Callable) -> Callable:
  """Turns errors a user can fix into one line on stderr and an exit status.

  A ConfigError (bad value, missing dataset, ...) exits with status 2; a run
  stopped by a non-finite loss exits with 1. Anything else is a bug and keeps
  its traceback.
  """

  @functools.wraps(main)
  def wrapped(argv):
    from resnet_jax import train  # pylint: disable=g-import-not-at-top
    try:
      return main(argv)
    except ConfigError as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_BAD_INPUT
    except train.NonFiniteLossError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1

  return wrapped


def run(main: Callable) -> None:
  """absl's app.run for `main`, with user errors reported as one line."""
  app.run(user_errors(main))


def maybe_initialize_distributed(config) -> None:
  """Calls jax.distributed.initialize when the config asks for a multi-host run.

  Must run before anything touches the devices. With no coordinator address,
  JAX detects the cluster (SLURM, Cloud TPU, ...) by itself.
  """
  if not config.distributed:
    return
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if config.coordinator_address:
    kwargs['coordinator_address'] = config.coordinator_address
  if config.num_processes > 0:
    kwargs['num_processes'] = config.num_processes
  if config.process_id >= 0:
    kwargs['process_id'] = config.process_id
  jax.distributed.initialize(**kwargs)
  logging.info('Process %d of %d; %d local of %d devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())

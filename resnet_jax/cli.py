"""What every command-line entry point shares: user-facing errors and multi-host set-up."""

import functools
import logging as std_logging
import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from resnet_jax.errors import ConfigError
from resnet_jax.errors import EXIT_BAD_INPUT
from resnet_jax.errors import EXIT_FAILED
from resnet_jax.errors import EXIT_PREEMPTED  # pylint: disable=unused-import  (re-exported)
from resnet_jax.errors import NonFiniteLossError


def user_errors(main: Callable) -> Callable:
  """Turns errors a user can fix into one line on stderr and an exit status.

  A ConfigError (bad value, missing dataset, ...) exits with status 2; a run
  stopped by a non-finite loss exits with 1. Anything else is a bug and keeps
  its traceback.
  """

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except ConfigError as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_FAILED

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """Parses absl flags; a bad flag or config override is one line and exit 2.

  ml_collections reports an unknown `--config.x` field or a value of the wrong
  type as an exception from inside flag parsing; a user should see the reason
  ("Did you mean 'depth'?"), not a traceback.
  """
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
      # config_flags defers a config file's load error to its first use.
      flags.FLAGS.config.keys()
    return rest
  except OSError as e:  # A config file that cannot be read.
    reason = _one_line(e).split(']: ')[-1]
    print(f'error: cannot load the config file: {reason}', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f'error: bad command-line flag: {_one_line(e)} (see --helpfull)',
          file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _one_line(error: Exception) -> str:
  """The reason in an exception raised while parsing flags, on one line."""
  raw = str(error.args[0]) if error.args else str(error)
  raw = raw.replace('\\n', '\n').replace("\\'", "'")
  if isinstance(error, OSError):
    return raw.strip().splitlines()[-1].strip()
  if len(raw) > 1 and raw[0] == raw[-1] and raw[0] in '\'"':
    raw = raw[1:-1]  # The repr of a KeyError's message.
  lines = [l.strip() for l in raw.splitlines() if l.strip()]
  if any(l.startswith('Traceback') for l in lines):
    # A config file raised: its own message is the last line of the traceback.
    prefix = lines[0].split(': Error whilst parsing config file')[0]
    reason = re.sub(r'^[\w.]+(Error|Exception): ', '', lines[-1])
    return f'{prefix}: {reason}'
  return ' '.join(lines)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of libraries that narrate every save and dataset read.

  orbax logs ~20 INFO lines per checkpoint; the console should show the run.
  Their warnings and errors still come through.
  """
  _NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorflow_datasets{os.sep}',
            f'{os.sep}jax{os.sep}_src{os.sep}')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or not any(n in record.pathname for n in self._NOISY))


def run(main: Callable) -> None:
  """absl's app.run for `main`, with user errors reported as one line."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(user_errors(main), flags_parser=parse_flags)


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

"""What every command-line entry point shares: user-facing errors and multi-host set-up."""

import functools
import logging as std_logging
import os
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from resnet_jax.errors import ConfigError
from resnet_jax.errors import EXIT_BAD_INPUT
from resnet_jax.errors import EXIT_FAILED
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

  ml_collections reports an unknown `--config.x` field, a value of the wrong
  type or an error raised by the config file itself as an exception from
  inside flag parsing; a user should see the reason ("Did you mean 'depth'?"),
  not a traceback.
  """
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
      # config_flags defers a config file's load error to its first use.
      flags.FLAGS.config.keys()
    return rest
  except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f'error: {flag_error_reason(e)} (see --helpfull)', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _chain(error: BaseException) -> list[BaseException]:
  """The error and the ones it was raised from, outermost first."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def flag_error_reason(error: BaseException) -> str:
  """One line saying why flag parsing failed, from the exceptions themselves.

  - a ConfigError raised by a config file (an unknown config argument): its message;
  - an unknown config field: ml_collections' KeyError ("Did you mean ...");
  - a config file that cannot be loaded: the OSError's last line;
  - anything else: the flag error's own message.
  """
  chain = _chain(error)
  # Innermost first: ml_collections re-raises a config file's error as the
  # same class with the traceback text in its message.
  for e in reversed(chain):
    if isinstance(e, ConfigError):
      return f'bad config: {_squeeze(e)}'
  for e in chain:
    if isinstance(e, KeyError) and e.args:
      return f'bad command-line flag: unknown config field {_squeeze(e.args[0])}'
  if isinstance(chain[-1], OSError):
    return f'cannot load the config file: {str(chain[-1]).strip().splitlines()[-1].strip()}'
  if isinstance(chain[0], flags.Error):
    return f'bad command-line flag: {_squeeze(chain[0])}'
  return f'bad command-line flag: {type(chain[-1]).__name__}: {_squeeze(chain[-1])}'


def _squeeze(text) -> str:
  return ' '.join(str(text).split())


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


def run(main: Callable, define_flags: Callable[[], None] | None = None) -> None:
  """Runs a command-line tool: its flags, absl's app.run, one-line user errors.

  Every tool defines its flags in a `define_flags()` function that only this
  calls, so that importing the module (tests, notebooks, other tools) leaves
  absl's flag namespace alone.

  Args:
    main: the tool's main(argv) -> exit status.
    define_flags: defines the tool's flags (None: it has none of its own).
  """
  if define_flags is not None:
    define_flags()
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

"""What every command-line entry point shares: user-facing errors and multi-host set-up."""

import functools
import logging as std_logging
import os
import signal
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from resnet_jax import configlib
from resnet_jax import errors
from resnet_jax import signals
from resnet_jax.errors import ConfigError
from resnet_jax.errors import EXIT_BAD_INPUT
from resnet_jax.errors import EXIT_FAILED
from resnet_jax.errors import EXIT_PREEMPTED
from resnet_jax.errors import NonFiniteLossError


def user_errors(main: Callable) -> Callable:
  """Turns errors a user can fix into one line on stderr and an exit status.

  A ConfigError (bad value, missing dataset, ...) or a write that found the
  disk full exits with status 2; a run stopped by a non-finite loss exits
  with 1; a stop by a signal before there was anything to save with 75.
  Anything else is a bug and keeps its traceback.
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
    except errors.StoppedBySignal as e:
      exit_stopped(e)
    except Exception as e:  # pylint: disable=broad-exception-caught
      if not errors.is_out_of_space(e):
        raise
      print(f'error: no space left on device: {_squeeze(_innermost(e))}; free space '
            'there (or use another location) and rerun', file=sys.stderr)
      return EXIT_BAD_INPUT

  return wrapped


def _innermost(error: BaseException) -> BaseException:
  return errors.chain(error)[-1]


def exit_stopped(error: errors.StoppedBySignal) -> None:
  """Prints the line of a stop by a signal before any training, then exits 75 at once.

  At once: the interpreter's shutdown is skipped, because the stop may have
  cut short work whose threads still run (a compilation, a read), and
  finalizing under them can crash or wait. The program has unwound by now
  (the workdir's lock is released); only output is left to flush.
  """
  print(error, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  logging.flush()
  os._exit(EXIT_PREEMPTED)  # pylint: disable=protected-access


def quit_interrupted(error: KeyboardInterrupt) -> None:
  """Says in one line that a (second) Ctrl-C stopped the program, then dies of SIGINT.

  Dying of the signal, not exiting with a status, tells a calling shell that
  the program was interrupted, so it stops the script around it too; the
  shell reports 130 (errors.EXIT_INTERRUPTED).
  """
  message = (str(error) if isinstance(error, errors.InterruptedAgain) and str(error)
             else 'interrupted: stopped at once')
  sys.stderr.write(f'\nerror: {message}\n')
  sys.stderr.flush()
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.kill(os.getpid(), signal.SIGINT)


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
  except Exception as e:  # pylint: disable=broad-exception-caught
    # Flag parsing runs the config file: any error of its code (a syntax
    # error, a NameError, a failed import) is bad input, said in one line.
    reason = flag_error_reason(e)
    hint = '' if reason.startswith(_IN_CONFIG) else ' (see --helpfull)'
    print(f'error: {reason}{hint}', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


_IN_CONFIG = 'bad config: '  # What a config file said or raised (not a flag's fault).


def flag_error_reason(error: BaseException) -> str:
  """One line saying why flag parsing failed, from the exceptions themselves.

  - a ConfigError raised by a config file (an unknown config argument): its message;
  - an error raised by the code of a config file: the file, line and error;
  - an unknown config field: ml_collections' KeyError ("Did you mean ...");
  - a config file that cannot be loaded: the OSError's last line;
  - anything else: the flag error's own message.
  """
  chain = errors.chain(error)
  # Innermost first: ml_collections re-raises a config file's error as the
  # same class with the traceback text in its message.
  for e in reversed(chain):
    if isinstance(e, ConfigError):
      return f'{_IN_CONFIG}{_squeeze(e)}'
  in_file = configlib.user_code_error(error, 'config')
  if in_file is not None:
    return f'{_IN_CONFIG}{in_file}'
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
  Their warnings and errors still come through, except orbax's records that
  carry a traceback: each is an exception that orbax raises to us again
  (a failed save), and that we report in one line.
  """
  _NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorflow_datasets{os.sep}',
            f'{os.sep}jax{os.sep}_src{os.sep}')
  _RERAISED = f'{os.sep}orbax{os.sep}'

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.exc_info and self._RERAISED in record.pathname:
      return False
    return (record.levelno >= std_logging.WARNING
            or not any(n in record.pathname for n in self._NOISY))


def run(main: Callable, define_flags: Callable[[], None] | None = None, *,
        stop_on_signals: bool = False) -> None:
  """Runs a command-line tool: its flags, absl's app.run, one-line user errors.

  Every tool defines its flags in a `define_flags()` function that only this
  calls, so that importing the module (tests, notebooks, other tools) leaves
  absl's flag namespace alone. A Ctrl-C that reaches this level is one line,
  and the process dies of SIGINT (status 130 to a shell).

  Args:
    main: the tool's main(argv) -> exit status.
    define_flags: defines the tool's flags (None: it has none of its own).
    stop_on_signals: SIGTERM/SIGINT from the very start (flag parsing, imports)
      stop the tool at once with one line and EXIT_PREEMPTED; `main` installs
      its own handling for what follows (training: save, then stop).
  """
  if define_flags is not None:
    define_flags()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  startup = signals.SignalFlag(stop_at_once=True, second_interrupt_raises=True)

  @functools.wraps(main)
  def main_then_finish(argv):
    try:
      return main(argv)
    finally:
      # The outcome is decided: a signal now only lands in the flag.
      startup.stop_at_once = False

  try:
    if stop_on_signals:
      startup.__enter__()
    app.run(user_errors(main_then_finish), flags_parser=parse_flags)
  except errors.StoppedBySignal as e:  # Before main took over.
    exit_stopped(e)
  except KeyboardInterrupt as e:
    quit_interrupted(e)
  finally:
    startup.__exit__()


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

"""Errors a user can act on, and the exit statuses every command-line tool uses.

Kept free of dependencies so that every module (models on a machine without
ml_collections, the CLIs, the sweep runner) raises, catches and returns the
same things.
"""

import errno
import signal

# Exit statuses, one home for all commands (main, evaluate, benchmark, sweep, ...).
EXIT_OK = 0
# A run that failed for a reason a user cannot fix by editing the command
# (a non-finite loss, a crash, a sweep with a failed point).
EXIT_FAILED = 1
# Bad input or missing resources (like argparse): the one-line message says
# what to change, free or fix (a config value, a full disk, an unwritable or
# busy workdir, a step that does not fit in memory, unusable checkpoints).
EXIT_BAD_INPUT = 2
# A run stopped by SIGTERM/SIGINT (sysexits' EX_TEMPFAIL): after writing its
# checkpoint when it had trained since the last one, at once when it had not
# (start-up: data, restore, compile). Not finished, not failed; rerunning
# resumes. Job scripts and schedulers can tell it from 0 (done) without
# reading the log, and requeue on it.
EXIT_PREEMPTED = 75
# A second Ctrl-C: quit at once, without waiting for a checkpoint in progress.
# The process dies of SIGINT itself, as an interrupted program should, so a
# shell reports 128 + SIGINT = 130 and stops the script around it instead of
# carrying on (or requeueing, which 75 would ask for): a person asked to stop.
EXIT_INTERRUPTED = 128 + signal.SIGINT


class ConfigError(ValueError):
  """A config value or input is invalid; the message says what to change."""


class OutOfSpaceError(ConfigError):
  """A write failed for lack of disk space or quota; the message says what was kept."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""


class StoppedBySignal(BaseException):
  """SIGTERM/SIGINT arrived while there was nothing worth saving (start-up).

  A BaseException, like KeyboardInterrupt, so that no `except Exception` on
  the way up swallows it; command-line tools print it and exit
  EXIT_PREEMPTED.

  Attributes:
    signum: the signal's number.
  """

  def __init__(self, signum: int, message: str = ''):
    self.signum = signum
    super().__init__(message or (
        f'Preempted by {signal_name(signum)} while starting up, before any training '
        'step: nothing to save, nothing lost; rerun the same command.'))


class InterruptedAgain(KeyboardInterrupt):
  """A second Ctrl-C: the run quits at once; the message says what is kept."""


def signal_name(signum: int) -> str:
  """'SIGTERM' for 15."""
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f'signal {signum}'


# strerror texts, as tensorstore and other libraries quote them in their errors.
_OUT_OF_SPACE = {errno.ENOSPC: 'No space left on device', errno.EDQUOT: 'Disk quota exceeded'}


def chain(error: BaseException | None) -> list[BaseException]:
  """The error and the ones it was raised from or during, outermost first."""
  found = []
  while error is not None and error not in found:
    found.append(error)
    error = error.__cause__ or error.__context__
  return found


def is_out_of_space(error: BaseException) -> bool:
  """Whether a failed write (OSError, or tensorstore's error text) was a full disk or quota."""
  for e in chain(error):
    if isinstance(e, OSError) and e.errno in _OUT_OF_SPACE:
      return True
    if any(text in str(e) for text in _OUT_OF_SPACE.values()):
      return True
  return False

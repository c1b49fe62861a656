"""Errors a user can act on, and the exit statuses every command-line tool uses.

Kept free of dependencies so that every module (models on a machine without
ml_collections, the CLIs, the sweep runner) raises, catches and returns the
same things.
"""

# Exit statuses, one home for all commands (main, evaluate, benchmark, sweep, ...).
EXIT_OK = 0
# A run that failed for a reason a user cannot fix by editing the command
# (a non-finite loss, a crash, a sweep with a failed point).
EXIT_FAILED = 1
# Bad input (like argparse): the one-line message says what to change.
EXIT_BAD_INPUT = 2
# A run stopped by SIGTERM/SIGINT after writing its checkpoint (sysexits'
# EX_TEMPFAIL): not finished, not failed; rerunning resumes. Job scripts and
# schedulers can tell it from 0 (done) without reading the log.
EXIT_PREEMPTED = 75


class ConfigError(ValueError):
  """A config value or input is invalid; the message says what to change."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""

"""Errors a user can act on; command-line tools print them as one line.

Kept free of dependencies so that every module (models on a machine without
ml_collections, the CLIs) raises and catches the same classes.
"""


class ConfigError(ValueError):
  """A config value or input is invalid; the message says what to change."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""

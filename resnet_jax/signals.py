"""Stopping on a signal, one way for every long-running command.

Training (`train.py`) and the sweep runner both catch SIGTERM/SIGINT (a
scheduler's preemption, a Ctrl-C) to stop cleanly instead of dying mid-step:
the signal only sets a flag that their loop polls, so nothing is interrupted
half-way through a write. `SignalFlag` is that flag:

    with signals.SignalFlag(second_interrupt_raises=True) as stop:
      while not stop.received:
        step()

Training uses it as above (a second Ctrl-C means "now": KeyboardInterrupt);
the sweep runner passes `on_signal` to forward each signal to its children.
"""

import signal
from typing import Callable, Iterable


class SignalFlag:
  """Records the first of `signals` received while the block runs.

  Attributes:
    received: the first signal's number, or None while none came.
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT), *,
               on_signal: Callable[[int], None] | None = None,
               second_interrupt_raises: bool = False):
    """Sets up the flag; handlers are installed by `with` only.

    Args:
      signals: the signals to catch.
      on_signal: called with the signal number on every caught signal (the
        first and any later ones), inside the handler: keep it short and
        reentrant (os.write, Popen.send_signal; not print).
      second_interrupt_raises: a SIGINT after any caught signal raises
        KeyboardInterrupt instead (a second Ctrl-C quits at once).
    """
    self.received: int | None = None
    self._signals = tuple(signals)
    self._on_signal = on_signal
    self._second_interrupt_raises = second_interrupt_raises
    self._previous = {}

  @property
  def name(self) -> str | None:
    """The first signal's name ('SIGTERM'), or None."""
    return None if self.received is None else signal.Signals(self.received).name

  def __enter__(self) -> 'SignalFlag':
    for sig in self._signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (some test runners): leave signals alone.
        pass
    return self

  def _handle(self, signum: int, frame) -> None:
    del frame
    if (self._second_interrupt_raises and self.received is not None
        and signum == signal.SIGINT):
      raise KeyboardInterrupt
    if self.received is None:
      self.received = signum
    if self._on_signal is not None:
      self._on_signal(signum)

  def __exit__(self, *exc) -> bool:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False

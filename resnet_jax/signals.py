"""Stopping on a signal, one way for every long-running command.

Training (`train.py`) and the sweep runner both catch SIGTERM/SIGINT (a
scheduler's preemption, a Ctrl-C) to stop cleanly instead of dying mid-step.
`SignalFlag` holds the handlers for a block and acts in one of two ways:

- `stop_at_once=True` (start-up: nothing worth saving yet): the first signal
  raises `errors.StoppedBySignal` where the program is, which unwinds it
  (releasing the workdir's lock on the way) and ends it with EXIT_PREEMPTED;
- otherwise the signal only sets a flag that the loop polls, so nothing is
  interrupted half-way through a step or a write:

    with signals.SignalFlag(stop_at_once=True, second_interrupt_raises=True) as stop:
      prepare()
      stop.stop_at_once = False  # From here on there is a state to save.
      while not stop.received:
        step()

With `second_interrupt_raises`, a SIGINT after any caught signal means "now":
KeyboardInterrupt. The sweep runner passes `on_signal` to forward each signal
to its children.

An exception raised by a signal handler lands wherever Python happens to be,
and where that is a garbage-collection callback Python reports and drops it.
So the first signal is also kept in `received`, and code that runs in stages
calls `check()` between them; a flag entered inside another one (a program's
start-up, then its main part) starts with the signal the outer one received.
"""

import signal
import sys
from typing import Callable, Iterable

from resnet_jax import errors

_ACTIVE: list['SignalFlag'] = []  # The flags whose blocks run, innermost last.


def _drop_reraised(unraisable) -> bool:
  """Whether an unraisable exception is a stop that `check()` raises again."""
  return isinstance(unraisable.exc_value, errors.StoppedBySignal)


def _install_unraisable_filter() -> None:
  previous = sys.unraisablehook
  if getattr(previous, 'resnet_jax_signals', False):
    return

  def hook(unraisable):
    if not _drop_reraised(unraisable):
      previous(unraisable)

  hook.resnet_jax_signals = True
  sys.unraisablehook = hook


class SignalFlag:
  """Records the first of `signals` received while the block runs.

  Attributes:
    received: the first signal's number, or None while none came.
    on_signal: called with the signal number on every caught signal that does
      not raise, inside the handler (may be replaced while the block runs).
    stop_at_once: while True, the first signal raises `errors.StoppedBySignal`
      instead of only being recorded; set it to False once the program holds
      something a stop should save first.
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT), *,
               on_signal: Callable[[int], None] | None = None,
               second_interrupt_raises: bool = False, stop_at_once: bool = False):
    """Sets up the flag; handlers are installed by `with` only.

    Args:
      signals: the signals to catch.
      on_signal: called with the signal number on every caught signal that
        does not raise, inside the handler: keep it short and reentrant
        (os.write, Popen.send_signal; not print).
      second_interrupt_raises: a SIGINT after any caught signal raises
        KeyboardInterrupt instead (a second Ctrl-C quits at once).
      stop_at_once: the initial value of the attribute (see the class).
    """
    self.received: int | None = None
    self.stop_at_once = stop_at_once
    self._signals = tuple(signals)
    self.on_signal = on_signal
    self._second_interrupt_raises = second_interrupt_raises
    self._previous = {}

  @property
  def name(self) -> str | None:
    """The first signal's name ('SIGTERM'), or None."""
    return None if self.received is None else errors.signal_name(self.received)

  def check(self) -> None:
    """Raises `errors.StoppedBySignal` if a signal came while `stop_at_once` holds.

    For the points between stages of work: the handler's own raise may have
    been dropped (see the module docstring).
    """
    if self.stop_at_once and self.received is not None:
      raise errors.StoppedBySignal(self.received)

  def __enter__(self) -> 'SignalFlag':
    if self.received is None:
      self.received = next((f.received for f in reversed(_ACTIVE)
                            if f.received is not None), None)
    _ACTIVE.append(self)
    _install_unraisable_filter()
    for sig in self._signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (some test runners): leave signals alone.
        pass
    return self

  def _handle(self, signum: int, frame) -> None:
    del frame
    first = self.received is None
    if (self._second_interrupt_raises and not first and signum == signal.SIGINT):
      raise KeyboardInterrupt
    if first:
      self.received = signum
      if self.stop_at_once:
        # Later signals only land in the flag: the unwinding this starts
        # (releasing the lock, closing files) is not interrupted again.
        raise errors.StoppedBySignal(signum)
    if self.on_signal is not None:
      self.on_signal(signum)

  def __exit__(self, *exc) -> bool:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    if self in _ACTIVE:
      _ACTIVE.remove(self)
    return False

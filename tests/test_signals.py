"""Tests for resnet_jax.signals.SignalFlag (signals sent to this very process)."""

import os
import signal
import threading

import pytest

from resnet_jax import errors
from resnet_jax import signals


def _send(signum):
  os.kill(os.getpid(), signum)  # The handler runs before os.kill returns to Python code.


def test_the_first_signal_is_recorded_and_the_callback_sees_each():
  seen = []
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with signals.SignalFlag(on_signal=seen.append) as flag:
    assert flag.received is None and flag.name is None
    _send(signal.SIGTERM)
    assert flag.received == signal.SIGTERM and flag.name == 'SIGTERM'
    _send(signal.SIGINT)  # Not "now" unless asked: recorded by the callback only.
    assert flag.received == signal.SIGTERM
  assert seen == [signal.SIGTERM, signal.SIGINT]
  # The previous handlers are back (pytest's SIGINT handler, the default SIGTERM).
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_interrupt_raises_when_asked():
  seen = []
  with signals.SignalFlag(on_signal=seen.append, second_interrupt_raises=True) as flag:
    _send(signal.SIGINT)
    assert flag.received == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      _send(signal.SIGINT)
  assert seen == [signal.SIGINT]  # The second one raised instead.
  with signals.SignalFlag(second_interrupt_raises=True) as flag:
    _send(signal.SIGTERM)
    _send(signal.SIGTERM)  # Only a second Ctrl-C means "now".
    with pytest.raises(KeyboardInterrupt):
      _send(signal.SIGINT)
    assert flag.received == signal.SIGTERM


def test_only_the_given_signals_are_caught():
  with signals.SignalFlag((signal.SIGHUP,)) as flag:
    assert signal.getsignal(signal.SIGTERM) != flag._handle  # pylint: disable=protected-access
    _send(signal.SIGHUP)
  assert flag.received == signal.SIGHUP


def test_outside_the_main_thread_it_is_a_flag_that_is_never_set():
  result = {}

  def body():
    before = signal.getsignal(signal.SIGTERM)
    with signals.SignalFlag() as flag:
      result['handler_unchanged'] = signal.getsignal(signal.SIGTERM) == before
      result['received'] = flag.received

  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert result == {'handler_unchanged': True, 'received': None}


def test_stop_at_once_raises_the_first_signal_and_only_records_later_ones():
  seen = []
  with signals.SignalFlag(stop_at_once=True, second_interrupt_raises=True,
                          on_signal=seen.append) as flag:
    with pytest.raises(errors.StoppedBySignal) as stopped:
      _send(signal.SIGTERM)
    assert stopped.value.signum == signal.SIGTERM and 'SIGTERM' in str(stopped.value)
    _send(signal.SIGTERM)  # While the first one unwinds: recorded, not raised.
    assert flag.received == signal.SIGTERM and seen == [signal.SIGTERM]
    with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C still means "now".
      _send(signal.SIGINT)
    with pytest.raises(errors.StoppedBySignal):
      flag.check()  # For a raise that landed where Python drops it.
    flag.stop_at_once = False  # From here on the loop polls `received`.
    flag.check()


def test_a_signal_received_by_an_enclosing_flag_carries_into_a_nested_one():
  with signals.SignalFlag() as outer:  # A program's start-up ...
    _send(signal.SIGTERM)
    with signals.SignalFlag(stop_at_once=True) as inner:  # ... then its main part.
      assert inner.received == signal.SIGTERM
      with pytest.raises(errors.StoppedBySignal):
        inner.check()
    assert outer.received == signal.SIGTERM
  with signals.SignalFlag() as fresh:
    assert fresh.received is None

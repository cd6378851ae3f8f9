"""SIGTERM and SIGINT as a stop request, SIGHUP as a reload request: acted on by a thread,
never by the handler itself (an Event.set from a handler can wait for ever on a lock its
own thread holds)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from connector.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_the_event_and_the_handlers_come_back(sig: int) -> None:
    before = signal.getsignal(sig)
    stopping = threading.Event()
    with stop_on_signals(stopping):
        os.kill(os.getpid(), sig)
        assert stopping.wait(5)
    assert signal.getsignal(sig) is before


def test_signals_while_the_main_thread_waits_on_the_event_itself() -> None:
    """The main thread in and out of the event's lock, as the daemon's loop is: every stop
    is seen."""
    for _ in range(20):
        stopping = threading.Event()
        with stop_on_signals(stopping):
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
            while not stopping.wait(0.0001):
                pass


def test_sighup_calls_reload_and_does_not_stop() -> None:
    before = signal.getsignal(signal.SIGHUP)
    stopping, reloaded = threading.Event(), threading.Event()
    with stop_on_signals(stopping, reload=reloaded.set):
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloaded.wait(5)
        assert not stopping.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # a stop after a reload is still one
        assert stopping.wait(5)
    assert signal.getsignal(signal.SIGHUP) is before


def test_without_reload_sighup_keeps_its_default_action() -> None:
    """`once`, `feed --follow`: a hangup ends them as it would any program (not sent
    here: it would end the tests)."""
    before = signal.getsignal(signal.SIGHUP)
    with stop_on_signals(threading.Event()):
        assert signal.getsignal(signal.SIGHUP) is before

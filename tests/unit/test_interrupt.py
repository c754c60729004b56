"""Stop requests survive a raise that Python swallows (a signal that lands inside a ``__del__``)."""

import os
import signal
import sys

import pytest

from sipo.interrupt import Terminated, check_stop, handling_stops


def _signal_swallowed(sig: int, exc_type: type[BaseException]) -> None:
    try:
        os.kill(os.getpid(), sig)
    except exc_type:
        pass  # what the interpreter does with an exception raised in a __del__


@pytest.mark.parametrize("sig, exc_type", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_swallowed_stop_request_is_raised_again(sig, exc_type):
    with handling_stops():
        check_stop()  # no request yet
        _signal_swallowed(sig, exc_type)
        with pytest.raises(exc_type):
            check_stop()
        with pytest.raises(exc_type):  # and stays raised until the block ends
            check_stop()
    check_stop()  # outside the block the request is forgotten


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with handling_stops():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_stop_request_swallowed_by_del_is_not_reported(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # what would print "Exception ignored in ..."

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    with handling_stops():
        Collected()  # the Terminated raised inside __del__ is swallowed by the interpreter
        with pytest.raises(Terminated):
            check_stop()
    assert reported == []
    assert sys.unraisablehook == reported.append

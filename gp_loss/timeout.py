"""A per-call time limit that turns an overrun into an exception.

On the main thread of a Unix process it uses ``SIGALRM`` (``setitimer``), which
interrupts Python code between torch calls; elsewhere (worker threads,
Windows) the call runs to its end and an overrun is reported afterwards.
"""
from __future__ import annotations

import _signal
import signal
import threading
import time


class TimeLimitExceeded(Exception):
    """A candidate's stage ran past its time limit."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


class _TimeLimit:
    """The context manager of :func:`time_limit`.

    The filter pipeline enters one per stage of every candidate (tens of
    thousands a minute), so it is a plain class rather than a generator, and
    it swaps the ``SIGALRM`` handler with ``_signal.signal``: ``signal.signal``
    is the same call plus a conversion of the handler it returns to an enum,
    which for a Python function fails through an exception and costs several
    times the call itself.
    """

    __slots__ = ("seconds", "_alarm", "_start", "_previous")

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None

    def _raise(self, signum, frame):
        raise TimeLimitExceeded(f"ran past its time limit of {self.seconds:g} s")

    def __enter__(self) -> None:
        self._alarm = self.seconds is not None and _can_alarm()
        self._start = time.perf_counter()
        if self._alarm:
            self._previous = _signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _signal.signal(signal.SIGALRM, self._previous)
        elif self.seconds is not None and exc_type is None and time.perf_counter() - self._start > self.seconds:
            # Without an alarm (not the main thread, no setitimer) an overrun shows only at the end.
            raise TimeLimitExceeded(f"ran past its time limit of {self.seconds:g} s")


def time_limit(seconds: float | None) -> _TimeLimit:
    """Raise :class:`TimeLimitExceeded` if the body runs longer than ``seconds`` (none if not positive)."""
    return _TimeLimit(seconds)

"""A per-call time limit that turns an overrun into an exception.

On the main thread of a Unix process it uses ``SIGALRM`` (``setitimer``), which
interrupts Python code between torch calls; elsewhere (worker threads,
Windows) the call runs to its end and an overrun is reported afterwards.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager


class TimeLimitExceeded(Exception):
    """A candidate's stage ran past its time limit."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`TimeLimitExceeded` if the body runs longer than ``seconds``."""
    if not seconds or seconds <= 0:
        yield
        return
    start = time.perf_counter()
    if _can_alarm():
        def _raise(signum, frame):
            raise TimeLimitExceeded(f"ran past its time limit of {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    else:
        yield
        if time.perf_counter() - start > seconds:
            raise TimeLimitExceeded(f"ran past its time limit of {seconds:g} s")

"""A per-call limit on CPU time that turns an overrun into an exception, and what limits did to a run.

The limit counts the CPU time of the calling thread (``time.thread_time``), not
wall time. A limit exists to stop a pathological candidate (a formula whose
evaluation explodes), and CPU time measures exactly that work: it barely moves
when other processes share the cores, or when the process is stopped or the
machine suspended, where wall time grows without bound. With a wall-clock
limit, a candidate accepted on an idle machine could be rejected on a busy one,
and since the search breeds from what it accepted, the whole search would take
another path. What CPU time does not bound is waiting (a body blocked on a
lock or on I/O); the bodies limited here compute and never wait.

On the main thread of a Unix process it uses ``SIGPROF`` (``setitimer`` with
``ITIMER_PROF``, which counts the CPU time of the whole process), checks the
thread's own CPU time when the signal comes and re-arms for the rest, and
raises between torch calls; elsewhere (worker threads, Windows) the call
runs to its end and an overrun is reported afterwards.

:func:`load_dependence` says whether a run's results could still depend on
the machine's load: whether any training or candidate was stopped by a limit.
"""
from __future__ import annotations

import _signal
import signal
import threading
import time
from typing import Any, Iterable, Mapping

# The status of a training, and the head of a filter rejection's reason, when a time limit stopped it.
TOO_SLOW = "too slow"


class TimeLimitExceeded(Exception):
    """A candidate's stage ran past its time limit."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


# The shortest re-arm: a zero interval would disarm the timer instead.
_MIN_REARM_S = 1e-4


class _TimeLimit:
    """The context manager of :func:`time_limit`.

    The filter pipeline enters one per stage of every candidate (tens of
    thousands a minute), so it is a plain class rather than a generator, and
    it swaps the ``SIGPROF`` handler with ``_signal.signal``: ``signal.signal``
    is the same call plus a conversion of the handler it returns to an enum,
    which for a Python function fails through an exception and costs several
    times the call itself.
    """

    __slots__ = ("seconds", "_alarm", "_start", "_previous")

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None

    def _message(self) -> str:
        return f"ran past its time limit of {self.seconds:g} s of CPU time"

    def _expired(self, signum, frame):
        # ITIMER_PROF counts every thread of the process, so it can fire before this thread
        # has used its limit (torch's intra-op threads): then wait for the rest.
        left = self.seconds - (time.thread_time() - self._start)
        if left > 0:
            signal.setitimer(signal.ITIMER_PROF, max(left, _MIN_REARM_S))
            return
        raise TimeLimitExceeded(self._message())

    def __enter__(self) -> None:
        self._alarm = self.seconds is not None and _can_alarm()
        self._start = time.thread_time()
        if self._alarm:
            self._previous = _signal.signal(signal.SIGPROF, self._expired)
            signal.setitimer(signal.ITIMER_PROF, self.seconds)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._alarm:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _signal.signal(signal.SIGPROF, self._previous)
        elif self.seconds is not None and exc_type is None and time.thread_time() - self._start > self.seconds:
            # Without an alarm (not the main thread, no setitimer) an overrun shows only at the end.
            raise TimeLimitExceeded(self._message())


def time_limit(seconds: float | None) -> _TimeLimit:
    """Raise :class:`TimeLimitExceeded` if the body uses more than ``seconds`` of this thread's CPU time
    (none if not positive)."""
    return _TimeLimit(seconds)


# -- what the limits did to a run -----------------------------------------------------------------

def hit_time_limit(outcome: Mapping[str, Any] | Any) -> bool:
    """Whether a training (a :class:`~gp_loss.tasks.base.TrainOutcome`, its dict, or a line of
    ``evaluations.jsonl``) was stopped by its time limit.

    Records written before the outcome had ``hit_time_limit`` say so by their status alone.
    """
    get = outcome.get if isinstance(outcome, Mapping) else lambda key, default=None: getattr(outcome, key, default)
    return bool(get("hit_time_limit", False)) or get("status") == TOO_SLOW


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def load_dependence(trainings: Iterable[Mapping[str, Any] | Any] = (), candidates_too_slow: int = 0) -> str | None:
    """One line saying that a run's results depend on the machine's load, or ``None`` when they do not.

    ``trainings``: the run's training outcomes or records (proxy trainings, baselines);
    ``candidates_too_slow``: the candidates the filters rejected for their time limit
    (:attr:`~gp_loss.filters.funnel.Funnel.too_slow`). A run where no limit stopped
    anything is reproducible from its seed; one where a limit did could have gone
    otherwise on a machine with more or less to do.
    """
    trained = sum(1 for t in trainings if hit_time_limit(t))
    if not trained and not candidates_too_slow:
        return None
    what = []
    if trained:
        what.append(f"{_count(trained, 'proxy training', 'proxy trainings')} hit the time limit "
                    f"(eval_time_limit_s) and scored 0")
    if candidates_too_slow:
        what.append(f"{_count(candidates_too_slow, 'candidate was', 'candidates were')} rejected as too slow "
                    f"by the filters (filter_time_limit_s)")
    return (f"{' and '.join(what)}: these results depend on the machine's load; raise the limit "
            f"to make them reproducible")

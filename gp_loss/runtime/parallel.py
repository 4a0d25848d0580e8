"""A map over workers: serial, multiprocessing or SCOOP.

All three return results lazily and in order, so a search can record each
result as soon as it (and those before it) are done. Jobs that carry their
own seeds give the same results whichever backend runs them: the choice
changes speed only. A job must be a top-level function of picklable data.

Besides the ordered map, ``submit`` and ``wait_first`` give asynchronous jobs:
submit one job at a time and take results as they finish, in whatever order
(an optimiser that proposes the next point as soon as a worker is free).

SCOOP: start the script under ``python -m scoop -n N script.py …`` (add
``--hostfile FILE`` for several machines); ``auto`` then picks SCOOP. SCOOP is
no longer developed, hence the pluggable choice.
"""
from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
from typing import Any, Callable, Collection, Iterable, Iterator, TypeVar

from gp_loss.errors import GpLossError

MAPS = ("auto", "serial", "multiprocessing", "scoop")

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process died while running a job (killed, or out of memory): its job is lost."""


def _reporting_death(results: Iterator[R]) -> Iterator[R]:
    """``results``, with a broken process pool reported as :class:`WorkerDied`."""
    try:
        yield from results
    except BrokenProcessPool as err:
        raise WorkerDied(str(err)) from None


def scoop_running() -> bool:
    """Whether this process was started by ``python -m scoop``."""
    try:
        import scoop
    except ImportError:  # pragma: no cover - scoop is a dependency
        return False
    return bool(getattr(scoop, "IS_RUNNING", False))


class Mapper:
    """A lazy, ordered ``map(fn, items)`` over the chosen backend; ``close()`` when done.

    ``workers``: how many processes run jobs at once (1 for serial; SCOOP's own
    count under ``python -m scoop``).
    """

    def __init__(self, kind: str = "auto", workers: int = 1):
        if kind not in MAPS:
            raise GpLossError(f"--map must be one of {', '.join(MAPS)}, got {kind!r}")
        if workers < 1:
            raise GpLossError(f"--workers must be at least 1, got {workers}")
        if kind == "auto":
            kind = "scoop" if scoop_running() else ("multiprocessing" if workers > 1 else "serial")
        if kind == "scoop" and not scoop_running():
            raise GpLossError("--map scoop needs the script started as `python -m scoop -n N script.py ...`")
        self.kind = kind
        self._pool = None
        if kind == "multiprocessing":
            # spawn: the workers start clean instead of inheriting torch's thread pools by fork;
            # jobs set their own torch thread count.
            # A process pool whose map fails (BrokenProcessPool -> WorkerDied) when a worker is
            # killed, where multiprocessing.Pool would wait forever for the job it lost.
            self._pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if kind == "scoop":
            import scoop
            self.workers = int(getattr(scoop, "SIZE", 1) or 1)
        else:
            self.workers = workers if kind == "multiprocessing" else 1

    def __call__(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        items = list(items)
        if self.kind == "serial":
            return map(fn, items)
        if self.kind == "multiprocessing":
            return _reporting_death(self._pool.map(fn, items))
        from scoop import futures
        return futures.map(fn, items)

    def submit(self, fn: Callable[..., R], *args) -> Any:
        """Start ``fn(*args)`` on a free worker (queued if none is free); a future of its result.

        The future has ``done()`` and ``result()`` (which raises the job's
        exception). Serial: the job runs now, inside this call, and its future
        is already done. Multiprocessing: a ``concurrent.futures.Future`` set by
        the pool's result thread. SCOOP: SCOOP's own future.
        """
        if self.kind == "serial":
            future = concurrent.futures.Future()
            try:
                future.set_result(fn(*args))
            except Exception as err:  # the job's error, raised again by result() like the other backends
                future.set_exception(err)
            return future
        if self.kind == "multiprocessing":
            try:
                return self._pool.submit(fn, *args)
            except BrokenProcessPool as err:
                raise WorkerDied(str(err)) from None
        from scoop import futures
        return futures.submit(fn, *args)

    def wait_first(self, pending: Collection[Any], timeout: float | None = None) -> tuple[set, set]:
        """Block until at least one of the ``pending`` futures (from :meth:`submit`) is done, or ``timeout`` s.

        Returns ``(done, not_done)`` as sets; ``done`` is empty only on a timeout.
        """
        if self.kind == "scoop":
            from scoop import futures
            done, not_done = futures.wait(list(pending), -1 if timeout is None else timeout,
                                          return_when=futures.FIRST_COMPLETED)
            return set(done), set(not_done)
        done, not_done = concurrent.futures.wait(list(pending), timeout,
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done), set(not_done)

    def close(self) -> None:
        """Let the workers finish and stop them."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "Mapper":
        return self

    def __exit__(self, *exc) -> None:
        # Leaving by an exception (Ctrl-C included) must not wait for jobs still queued.
        if self._pool is not None:
            # (ProcessPoolExecutor.terminate_workers arrives in Python 3.14; until then its processes.)
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join()
            self._pool = None

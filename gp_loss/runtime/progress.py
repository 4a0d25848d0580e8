"""Progress of a long phase on screen, the way a search's recorder shows it.

A tqdm bar on stderr while stderr is a terminal (redirected to a file, no bar and
no carriage returns), and one summary line per finished step on stdout, written
with ``tqdm.write`` so that it prints above the bar instead of through it, and
flushed at once so that a log followed with ``tail -f`` keeps up.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, TypeVar

from tqdm import tqdm

from gp_loss.runtime.backend import Backend, WorkerDied

T = TypeVar("T")
R = TypeVar("R")


class Progress:
    """One phase: ``total`` steps of ``unit``, ``done`` of them already (a resumed phase)."""

    def __init__(self, total: int, desc: str, unit: str = "training", done: int = 0, enabled: bool | None = None):
        self.started = time.perf_counter()
        self.done, self.total = done, total  # counted here too: a disabled bar counts nothing
        self.bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr, leave=False,
                        disable=enabled is False or (enabled is None and not sys.stderr.isatty()))

    def seconds(self) -> float:
        """Wall seconds since the phase started."""
        return time.perf_counter() - self.started

    def at(self, done: int) -> None:
        """``done`` steps are finished."""
        self.bar.update(done - self.done)
        self.done = done

    def step(self) -> None:
        """One more step is finished."""
        self.at(self.done + 1)

    def line(self, text: str) -> None:
        """One summary line on stdout, above the bar."""
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def map_reporting(mapper: Backend, fn: Callable[[T], R], items: Iterable[T],
                  finished: Callable[[int, R], Any]) -> list[R]:
    """``fn`` over ``items`` on ``mapper``'s workers, ``finished(index, result)`` as each job ends.

    At most ``mapper.workers`` jobs are submitted at a time (serially: one, so that each is reported
    when it ends, not after all of them). The results come back in the order of ``items``. A job's
    exception is raised again; a worker that died is :class:`~gp_loss.runtime.backend.WorkerDied`.
    """
    items = list(items)
    results: list = [None] * len(items)
    queue = list(range(len(items)))
    in_flight: dict = {}  # future -> index
    while queue or in_flight:
        while queue and len(in_flight) < mapper.workers:
            index = queue.pop(0)
            in_flight[mapper.submit(fn, items[index])] = index
        done, _ = mapper.wait_first(in_flight)
        for future in sorted(done, key=lambda f: in_flight[f]):  # not the order of a set
            index = in_flight.pop(future)
            try:
                results[index] = future.result()
            except BrokenProcessPool as err:
                raise WorkerDied(str(err) or "a worker process ended abruptly") from None
            finished(index, results[index])
    return results

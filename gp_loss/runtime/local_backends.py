"""Backends on this machine: serial (in this process) and multiprocessing (a process pool).

No multiprocessing worker outlives its search, however the search ends (SIGKILL
from a scheduler or the out-of-memory killer included): each exits as soon as the
process that started it is gone (:func:`_die_with_parent`). The count of workers
is checked against what the machine can hold
(:func:`gp_loss.runtime.worker_limits.check_worker_count`) before any is started.
"""
from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from gp_loss.errors import GpLossError
from gp_loss.runtime.backend import Backend, BackendOptions, WorkerDied, set_gpu_sharers
from gp_loss.runtime.worker_limits import check_worker_count


def _no_workers_per_gpu(options: BackendOptions, name: str) -> None:
    if options.workers_per_gpu is not None:
        raise GpLossError(f"--workers-per-gpu needs worker processes: drop --map {name}, or use "
                          f"--map multiprocessing or --map ray")


class SerialBackend(Backend):
    """Every job in this process, one after the other."""

    name = "serial"
    needs_pickle = False

    def __init__(self, options: BackendOptions = BackendOptions()):
        self.workers = 1

    @classmethod
    def available(cls, options: BackendOptions) -> bool:
        return (options.workers or 1) == 1 and options.workers_per_gpu is None

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        _no_workers_per_gpu(options, cls.name)

    @classmethod
    def planned_workers(cls, options: BackendOptions) -> int:
        return 1

    @classmethod
    def launch_command(cls, python: str, script: str, workers: int) -> list[str]:
        return [python, script, "--map", cls.name]

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        return map(fn, list(items))

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Runs the job now, inside this call: its future is already done."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # the job's error, raised again by result() as on the other backends
            future.set_exception(err)
        return future


class ProcessBackend(Backend):
    """``workers`` processes of this machine (``concurrent.futures.ProcessPoolExecutor``, spawned).

    Call it from the thread that created it: a worker is tied to the thread that
    starts it (:func:`_die_with_parent`).
    """

    name = "multiprocessing"

    def __init__(self, options: BackendOptions):
        self.workers = self.planned_workers(options)
        # spawn: the workers start clean instead of inheriting torch's thread pools by fork; jobs set their own
        # torch thread count. A process pool (unlike multiprocessing.Pool) fails its map with BrokenProcessPool
        # when a worker is killed, where Pool would wait forever for the job it lost.
        # Read by gp_loss/__init__.py in each worker as it starts: the workers of this process die with it.
        os.environ[WORKER_MARK] = str(os.getpid())
        self._pool: concurrent.futures.ProcessPoolExecutor | None = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(os.getpid(), self.workers))

    @classmethod
    def available(cls, options: BackendOptions) -> bool:
        return True

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        from gp_loss.runtime.device import check_device, gpu_count

        workers = options.workers or 1
        if workers < 1:
            raise GpLossError(f"--workers must be at least 1, got {workers}")
        per_gpu = options.workers_per_gpu
        if per_gpu is None:
            check_worker_count(workers, options.device)
            return
        if per_gpu < 1:
            raise GpLossError(f"--workers-per-gpu must be at least 1, got {per_gpu}")
        device = options.device or "auto"
        check_device(device)
        gpus = gpu_count(device)
        if gpus == 0:
            raise GpLossError(f"--workers-per-gpu needs a GPU, but --device {device} trains on the CPU "
                              f"here; use --workers N instead")
        if options.workers is not None and options.workers != per_gpu * gpus:
            raise GpLossError(f"--workers {options.workers} disagrees with --workers-per-gpu {per_gpu} on "
                              f"{gpus} GPU(s) ({per_gpu * gpus} workers); give one of them")
        check_worker_count(per_gpu * gpus, device, "--workers-per-gpu", per=gpus)

    @classmethod
    def planned_workers(cls, options: BackendOptions) -> int:
        if options.workers_per_gpu is None:
            return options.workers or 1
        from gp_loss.runtime.device import gpu_count
        return options.workers_per_gpu * gpu_count(options.device or "auto")

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        return _reporting_death(self._pool.map(fn, list(items)))

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool as err:
            raise WorkerDied(str(err)) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            _forget_worker_mark()

    def abort(self) -> None:
        if self._pool is not None:
            # (ProcessPoolExecutor.terminate_workers arrives in Python 3.14; until then its processes.)
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join()
            self._pool = None
            _forget_worker_mark()


def _reporting_death(results: Iterator[Any]) -> Iterator[Any]:
    """``results``, with a broken process pool reported as :class:`WorkerDied`."""
    try:
        yield from results
    except BrokenProcessPool as err:
        raise WorkerDied(str(err)) from None


# -- no worker outlives its search ---------------------------------------------------

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WORKER_MARK = "GP_LOSS_SEARCH_PID"  # set while a pool starts workers: see gp_loss/__init__.py
PARENT_POLL_S = 0.5


def _forget_worker_mark() -> None:
    """No more workers of this process start: later children of it (a subprocess) are not marked."""
    if os.environ.get(WORKER_MARK) == str(os.getpid()):
        del os.environ[WORKER_MARK]


def _start_worker(parent: int, workers: int) -> None:
    """Pool worker initializer: the pool's size shares the GPUs (:func:`~gp_loss.runtime.backend.gpu_sharers`),
    and the worker dies with ``parent`` (:func:`_die_with_parent`)."""
    set_gpu_sharers(workers)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker as soon as ``parent`` (the search process) is gone.

    Without it a worker outlives a search killed by SIGKILL: an idle one waits on a
    job queue whose writing end it holds itself, so it never sees end-of-file, and a
    busy one finishes its training and then waits the same way; both keep their memory
    until killed by hand.
    Linux delivers SIGKILL the moment the parent dies (``PR_SET_PDEATHSIG``; strictly,
    when the parent's thread that started the worker ends, hence the one-thread rule
    of :class:`ProcessBackend`). Elsewhere, and as a second guard, a thread notices the
    parent's death within :data:`PARENT_POLL_S` seconds: the worker is handed to another
    parent, so ``os.getppid()`` changes.
    """
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="gp-loss parent watch", daemon=True).start()


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library to call: the watching thread still guards
        return False


def _exit_when_orphaned(parent: int, poll_s: float = PARENT_POLL_S) -> None:
    """Exit this process once ``parent`` is no longer its parent (at once: nothing is owed to a search that is gone)."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)

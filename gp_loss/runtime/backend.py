"""The parallel-evaluation extension point: one :class:`Backend` subclass per engine.

A backend runs jobs (a top-level function and its arguments) on its workers, in
two ways: an ordered, lazy ``map`` (DEAP's ``toolbox.map``: results in the order
of the items, each as soon as it and those before it are done), and
``submit`` / ``wait_first`` (asynchronous jobs taken as they finish: an optimiser
that proposes the next point as soon as a worker is free). Jobs carry their own
seeds, so the backend changes speed only, never a result.

Adding an engine is one subclass registered in
:data:`gp_loss.runtime.parallel.BACKENDS`; nothing outside ``gp_loss/runtime``
knows a backend by name.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import concurrent.futures
from dataclasses import dataclass
import os
import socket
from typing import Any, Callable, ClassVar, Collection, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process died while running a job (killed, or out of memory) and its job is lost."""


@dataclass(frozen=True)
class WorkerInfo:
    """Who answered a warm-up job: process id, host (see :func:`host_label`), training device, GPU slot."""

    pid: int
    host: str
    device: str
    slot: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        """Distinct per worker process (process ids repeat across hosts)."""
        return self.host, self.pid


def host_label() -> str:
    """This host as the run's log names it: its name, and the address SSH reached it at (SCOOP's remote workers).

    Over SSH the address tells hosts apart that share a name (or two addresses of one
    machine, as in the loopback test), and it is what a hostfile usually lists.
    """
    name = socket.gethostname()
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return f"{name} ({ssh[2]})" if len(ssh) == 4 and ssh[2] != name else name


@dataclass(frozen=True)
class BackendOptions:
    """What a script's flags ask of a backend.

    ``workers``: jobs run at once (``--workers``; ``None``: the backend's own
    default). ``workers_per_gpu``: K jobs share each GPU of ``device`` (``None``:
    not asked). ``device``: the training device setting (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``), ``None`` if unknown. ``address``: a cluster to join
    (Ray's ``HOST:PORT``).
    """

    workers: int | None = None
    workers_per_gpu: int | None = None
    device: str | None = None
    address: str | None = None


class Backend(ABC):
    """Runs jobs on workers. A context manager: leaving by an exception stops the workers at once.

    Subclasses set :attr:`name`, :attr:`needs_pickle` and :attr:`workers`, and
    implement :meth:`map` and :meth:`submit` (and :meth:`wait_first` when their
    futures are not ``concurrent.futures`` ones).
    """

    name: ClassVar[str]
    #: Whether jobs leave this process (so a job must be a top-level function of picklable data).
    needs_pickle: ClassVar[bool] = True
    #: How many jobs run at once.
    workers: int = 1

    @classmethod
    def available(cls, options: BackendOptions) -> bool:
        """Whether ``--map auto`` picks this backend (checked in :data:`~gp_loss.runtime.parallel.BACKENDS` order)."""
        return False

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        """Raise :class:`~gp_loss.errors.GpLossError` if this backend cannot start with ``options``.

        Starts nothing: a script calls it before it writes anything.
        """

    @classmethod
    def planned_workers(cls, options: BackendOptions) -> int:
        """The worker count these options ask for, as far as it is known before starting (checked first)."""
        return options.workers or 1

    @classmethod
    def launch_command(cls, python: str, script: str, workers: int) -> list[str]:
        """How a user starts ``script`` (a ``runs/`` search) on this backend with ``workers`` workers."""
        return [python, script, "--map", cls.name, "--workers", str(workers)]

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` on the workers: results lazily and in order.

        Raises :class:`WorkerDied` (when iterated) if a worker died and its job cannot be run again.
        """

    def __call__(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        return self.map(fn, items)

    @abstractmethod
    def submit(self, fn: Callable[..., R], *args) -> Any:
        """Start ``fn(*args)`` on a free worker (queued if none is free); a future of its result.

        The future is hashable and has ``done()`` and ``result()`` (which raises the job's exception).
        """

    def wait_first(self, pending: Collection[Any], timeout: float | None = None) -> tuple[set, set]:
        """Block until at least one of the ``pending`` futures (from :meth:`submit`) is done, or ``timeout`` s.

        Returns ``(done, not_done)`` as sets; ``done`` is empty only on a timeout.
        """
        done, not_done = concurrent.futures.wait(list(pending), timeout,
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done), set(not_done)

    def check_job(self, job: object) -> None:
        """Raise :class:`~gp_loss.errors.GpLossError` if ``job`` (a function or callable object) cannot reach
        this backend's workers: they need it pickled (by reference, so a top-level function or an instance
        of a top-level class). Only a check: nothing is stored pickled."""
        if not self.needs_pickle:
            return
        import pickle

        from gp_loss.errors import GpLossError
        try:
            pickle.dumps(job)
        except Exception as err:  # pickle raises several types (PicklingError, AttributeError, TypeError)
            raise GpLossError(f"with several workers the objective must pickle (a top-level function or an "
                              f"instance of a top-level class): {type(err).__name__}: {err}") from None

    def expected_hosts(self) -> list[tuple[str, int]] | None:
        """The hosts and worker counts this backend was asked to use, where it knows them (else ``None``)."""
        return None

    def missing_hint(self) -> str:
        """Where to look when fewer workers answer than :attr:`workers` (a sentence, or ``""``)."""
        return ""

    def close(self) -> None:
        """Let the workers finish their jobs and stop them."""

    def abort(self) -> None:
        """Stop the workers now, dropping queued jobs (an error or Ctrl-C is on its way out)."""
        self.close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# In a worker process: how many workers of its search share the GPUs it sees (None: unknown, or serial).
_SHARERS: int | None = None


def gpu_sharers() -> int | None:
    """How many workers share the GPUs this worker process sees (``None`` where unknown, and serially).

    :func:`gp_loss.runtime.device.share_gpu_memory` caps each one's share of GPU memory by it.
    """
    return _SHARERS


def set_gpu_sharers(count: int | None) -> None:
    """Set in a worker by its backend before it runs jobs (see :func:`gpu_sharers`)."""
    global _SHARERS
    _SHARERS = count


def missing_workers(infos: list[WorkerInfo], requested: int, waited_s: float,
                    hosts: list[tuple[str, int]] | None = None, hint: str = "") -> str | None:
    """One line saying that fewer than ``requested`` workers answered, or ``None`` when all did.

    ``hosts``: the hosts and counts the backend was asked to use
    (:meth:`Backend.expected_hosts`); those no worker answered from are named.
    ``hint``: where to look next (:meth:`Backend.missing_hint`).
    """
    if len(infos) >= requested:
        return None
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.host] = counts.get(info.host, 0) + 1
    answered = ", ".join(f"{n} on {host}" for host, n in sorted(counts.items()))
    line = (f"only {len(infos)} of {requested} workers answered within {waited_s:.0f} s ({answered}); "
            f"the search runs on those")
    if hosts:
        origin = host_label()
        known = set().union(*(_host_names(label, origin) for label in counts)) if counts else set()
        silent = [(h, n) for h, n in hosts if h not in known and h.split(".")[0] not in known]
        if silent:
            line += ". No worker answered from " + ", ".join(f"{h} ({n} asked)" for h, n in silent)
    return line + (f". {hint}" if hint else "")


def _host_names(label: str, origin: str) -> set[str]:
    """The names a hostfile may give the host of ``label`` (``origin``: the label of the search's own host)."""
    name, _, rest = label.partition(" (")
    names = {name, name.split(".")[0]}
    if rest:
        names.add(rest.rstrip(")"))
    if label == origin:  # a hostfile names the origin as localhost, 127.0.0.1 or by name
        names |= {"localhost", "127.0.0.1", socket.getfqdn()}
    return names

"""Choosing and starting a parallel backend: serial, multiprocessing, SCOOP or Ray.

Every backend returns the same results (jobs carry their own seeds), so the
choice changes speed only. ``--map auto`` picks SCOOP under ``python -m scoop``,
Ray when a cluster address is given, multiprocessing for more than one worker,
and serial otherwise. The engines are :class:`~gp_loss.runtime.backend.Backend`
subclasses listed in :data:`BACKENDS`; this module is the one place that knows
them by name.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from gp_loss.errors import GpLossError
from gp_loss.runtime.backend import (Backend, BackendOptions, WorkerDied, WorkerInfo, gpu_sharers,
                                     host_label, missing_workers)
from gp_loss.runtime.local_backends import ProcessBackend, SerialBackend
from gp_loss.runtime.ray_backend import RayBackend
from gp_loss.runtime.scoop_backend import ScoopBackend, fail_scoop_launch, scoop_hosts, scoop_running

__all__ = ["BACKENDS", "BACKEND_FLAGS", "MAPS", "RESUMABLE_BACKEND_SETTINGS", "Backend", "BackendOptions", "WorkerDied", "WorkerInfo", "backend_class", "backend_for_job",
           "check_backend", "check_backend_for", "fail_scoop_launch", "gpu_sharers", "host_label", "missing_workers", "open_backend", "open_backend_for",
           "parallel_backends", "planned_workers", "scoop_hosts", "scoop_running"]

#: ``--map`` name -> backend, in the order ``--map auto`` considers them.
BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (ScoopBackend, RayBackend, SerialBackend,
                                                                 ProcessBackend)}
MAPS = ("auto", "serial", "multiprocessing", "scoop", "ray")
assert set(MAPS) == {"auto", *BACKENDS}


# The backend flags of the scripts that take a flag table (flag -> setting, type, default, help), and the
# settings among them that may change when a run is resumed (where jobs run changes no result).
BACKEND_FLAGS = {
    "--workers": ("workers", int, 1, "jobs at once: worker processes, or Ray tasks"),
    "--map": ("map", str, "auto", "where jobs run: serial, multiprocessing, ray or scoop; auto (default): scoop "
                                  "under `python -m scoop`, ray with --ray-address, multiprocessing with --workers "
                                  "above 1, else serial"),
    "--ray-address": ("ray_address", str, None, "HOST:PORT of a Ray cluster's head (`ray start --head`) to run on"),
}
RESUMABLE_BACKEND_SETTINGS = frozenset(spec[0] for spec in BACKEND_FLAGS.values())


def open_backend_for(run: dict) -> Backend:
    """The backend of a script's ``run`` settings (:data:`BACKEND_FLAGS` and ``device``), started."""
    return open_backend(run["map"], run["workers"], run["device"], address=run["ray_address"])


def check_backend_for(run: dict) -> type[Backend]:
    """:func:`check_backend` for a script's ``run`` settings (starts nothing)."""
    return check_backend(run["map"], run["workers"], run["device"], address=run["ray_address"])


@contextmanager
def backend_for_job(given: Backend | None, workers: int, job: object) -> Iterator[Backend]:
    """``given``, or a backend of ``workers`` started for the ``with`` block; ``job`` checked to reach its workers.

    A backend started here is closed when the block ends, or stopped without waiting for queued jobs
    when it ends by an exception (Ctrl-C included); a ``given`` one is left to its owner.
    """
    if given is not None:
        given.check_job(job)
        yield given
        return
    with open_backend("auto", workers) as backend:
        backend.check_job(job)
        yield backend
        backend.close()


def parallel_backends() -> list[str]:
    """The ``--map`` names of the backends whose jobs run in worker processes (all but serial)."""
    return [name for name, cls in BACKENDS.items() if cls.needs_pickle]


def backend_class(kind: str = "auto", options: BackendOptions = BackendOptions()) -> type[Backend]:
    """The backend ``--map kind`` names (``auto``: the first of :data:`BACKENDS` available with ``options``)."""
    if kind == "auto":
        return next(cls for cls in BACKENDS.values() if cls.available(options))
    if kind not in BACKENDS:
        raise GpLossError(f"--map must be one of {', '.join(MAPS)}, got {kind!r}")
    if options.address is not None and kind != RayBackend.name:
        raise GpLossError(f"--ray-address joins a Ray cluster: give --map ray (or drop --map {kind})")
    return BACKENDS[kind]


def _options(workers: int | None, device: str | None, workers_per_gpu: int | None,
             address: str | None) -> BackendOptions:
    if workers is not None and workers < 1:
        raise GpLossError(f"--workers must be at least 1, got {workers}")
    if workers_per_gpu is not None and workers_per_gpu < 1:
        raise GpLossError(f"--workers-per-gpu must be at least 1, got {workers_per_gpu}")
    if address is not None and not address.strip():
        raise GpLossError("--ray-address is empty: give HOST:PORT of a Ray cluster's head, or leave it out")
    return BackendOptions(workers=workers, workers_per_gpu=workers_per_gpu, device=device, address=address)


def check_backend(kind: str = "auto", workers: int | None = 1, device: str | None = None, *,
                  workers_per_gpu: int | None = None, address: str | None = None) -> type[Backend]:
    """Raise :class:`GpLossError` if that backend cannot start here; else the backend class it resolves to.

    Starts nothing: a script calls it before it writes anything.
    """
    options = _options(workers, device, workers_per_gpu, address)
    cls = backend_class(kind, options)
    cls.check(options)
    return cls


def planned_workers(kind: str = "auto", workers: int | None = 1, device: str | None = None, *,
                    workers_per_gpu: int | None = None, address: str | None = None) -> int:
    """The worker count those settings ask for (checked first, as :func:`check_backend` does)."""
    options = _options(workers, device, workers_per_gpu, address)
    cls = check_backend(kind, workers, device, workers_per_gpu=workers_per_gpu, address=address)
    return cls.planned_workers(options)


def open_backend(kind: str = "auto", workers: int | None = 1, device: str | None = None, *,
                 workers_per_gpu: int | None = None, address: str | None = None) -> Backend:
    """The backend ``--map kind`` names, checked and started; close it (or use it as a context manager)."""
    options = _options(workers, device, workers_per_gpu, address)
    cls = check_backend(kind, workers, device, workers_per_gpu=workers_per_gpu, address=address)
    return cls(options)

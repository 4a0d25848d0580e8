"""Ray as a backend: a local Ray started for the search, or a running Ray cluster joined.

``--map ray --workers N`` starts Ray on this machine with N CPUs (one job per
CPU). ``--ray-address HOST:PORT`` (or the ``RAY_ADDRESS`` environment variable)
joins a cluster started with ``ray start --head --port PORT`` on one host and
``ray start --address HOST:PORT`` on the others; it then runs ``--workers`` jobs
at once (default: one per CPU of the cluster).

GPUs: with ``--workers-per-gpu K`` each job asks Ray for 1/K of a GPU, so K
proxies share each GPU of the cluster, and each caps its share of the GPU's
memory at 1/K. Without it, a CUDA device setting spreads the jobs evenly over the
cluster's GPUs, and ``--device cpu`` asks for none.

A job whose worker process or node dies is run again (Ray's task retries, up to
:data:`MAX_RETRIES` times): a job carries its own seed, so the search ends as it
would have without the failure. Workers and the package: every node imports
gp-loss from the path this process imports it from (``PYTHONPATH`` of Ray's
workers), so a checkout at the same path on every host, or gp-loss installed
there, serves; data paths must name the same data on every host.
"""
from __future__ import annotations

import os
from pathlib import Path
import re
import socket
from typing import Any, Callable, Collection, Iterable, Iterator

from gp_loss.errors import GpLossError
from gp_loss.runtime.backend import Backend, BackendOptions, WorkerDied, set_gpu_sharers

#: Times Ray runs a job again after its worker process or node died.
MAX_RETRIES = 3
# HOST:PORT (a host name, IPv4, or [IPv6]), ray://HOST:PORT (Ray Client), or "auto" (the cluster on this host).
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):[0-9]{1,5}$")


def cluster_address(options: BackendOptions) -> str | None:
    """The cluster to join: ``--ray-address``, else ``RAY_ADDRESS``; ``None`` starts a local Ray."""
    address = options.address if options.address is not None else os.environ.get("RAY_ADDRESS")
    return address.strip() if address and address.strip() else None


def check_address(address: str, where: str = "--ray-address") -> None:
    """Raise :class:`GpLossError` unless ``address`` reads as ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``."""
    if address == "auto":
        return
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise GpLossError(f"{where} must be HOST:PORT of a Ray cluster's head (e.g. 10.0.0.1:6379, as "
                          f"`ray start --head --port 6379` prints), got {address!r}")


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`GpLossError` at once if nothing listens at ``address`` (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise GpLossError(f"cannot join the Ray cluster at {address}: {err.strerror or err}. Start its head with "
                          f"`ray start --head --port {port}` there, or give the address it printed") from None


def _caused_by(err: BaseException, name: str) -> bool:
    """Whether an exception named ``name`` is ``err`` or in the chain of exceptions that led to it."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if type(err).__name__ == name:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _job(fn: Callable, args: tuple, sharers: int | None) -> Any:
    """What a Ray worker runs: ``fn(*args)``, with the count of jobs sharing its GPU known to the job."""
    set_gpu_sharers(sharers)
    return fn(*args)


class RayFuture:
    """A job submitted to Ray: ``done()`` and ``result()`` like ``concurrent.futures.Future``."""

    def __init__(self, ref: Any, backend: "RayBackend"):
        self.ref = ref
        self._backend = backend

    def done(self) -> bool:
        import ray
        ready, _ = ray.wait([self.ref], num_returns=1, timeout=0)
        return bool(ready)

    def result(self) -> Any:
        return self._backend._take(self.ref)


def _get(ref: Any) -> Any:
    """A job's result, raising the job's own exception, or :class:`WorkerDied` once Ray gave up on it."""
    import ray
    from ray import exceptions
    try:
        return ray.get(ref)
    except exceptions.RayTaskError as err:  # the job raised: the same exception as on any other backend
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError,
            exceptions.RaySystemError) as err:
        raise WorkerDied(f"Ray lost the job after {MAX_RETRIES} retries: {str(err).splitlines()[0]}") from None


class RayBackend(Backend):
    """Jobs as Ray tasks, one CPU each (and a share of a GPU where the search trains on GPUs)."""

    name = "ray"

    @classmethod
    def available(cls, options: BackendOptions) -> bool:
        return options.address is not None

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise GpLossError("--map ray needs Ray: pip install 'ray[default]' (or choose another --map)") from None
        if options.workers is not None and options.workers < 1:
            raise GpLossError(f"--workers must be at least 1, got {options.workers}")
        if options.workers_per_gpu is not None and options.workers_per_gpu < 1:
            raise GpLossError(f"--workers-per-gpu must be at least 1, got {options.workers_per_gpu}")
        address = cluster_address(options)
        if address is not None:
            check_address(address, "--ray-address" if options.address is not None else "RAY_ADDRESS")
            _check_reachable(address)
            return
        from gp_loss.runtime.device import check_device, gpu_count
        from gp_loss.runtime.worker_limits import check_worker_count
        if options.device is not None:
            check_device(options.device)
        if options.workers_per_gpu is not None:
            device = options.device or "auto"
            gpus = gpu_count(device)
            if gpus == 0:
                raise GpLossError(f"--workers-per-gpu needs a GPU, but --device {device} trains on the CPU "
                                  f"here; use --workers N instead")
            if options.workers is not None and options.workers != options.workers_per_gpu * gpus:
                raise GpLossError(f"--workers {options.workers} disagrees with --workers-per-gpu "
                                  f"{options.workers_per_gpu} on {gpus} GPU(s); give one of them")
            check_worker_count(options.workers_per_gpu * gpus, device, "--workers-per-gpu", per=gpus)
        else:
            check_worker_count(options.workers or 1, options.device)

    @classmethod
    def planned_workers(cls, options: BackendOptions) -> int:
        if options.workers_per_gpu is not None and cluster_address(options) is None:
            from gp_loss.runtime.device import gpu_count
            return options.workers_per_gpu * gpu_count(options.device or "auto")
        return options.workers or 1

    def __init__(self, options: BackendOptions):
        import logging

        import ray

        address = cluster_address(options)
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
        common = dict(runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=True,
                      ignore_reinit_error=False)
        if ray.is_initialized():  # a caller's own Ray (a notebook): used as it is
            self._owns = False
        elif address is None:
            from gp_loss.runtime.device import gpu_count
            workers = self.planned_workers(options)
            gpus = gpu_count(options.device or "auto") if options.device != "cpu" else 0
            ray.init(num_cpus=workers, num_gpus=gpus, include_dashboard=False, **common)
            self._owns = True
        else:
            try:
                ray.init(address=address, **common)
            except (ConnectionError, RuntimeError, ValueError) as err:
                detail = " ".join(str(err).split())[:300]
                if _caused_by(err, "AuthenticationError"):
                    raise GpLossError(f"cannot join the Ray cluster at {address}: it uses token authentication and "
                                      f"this machine lacks its token. Run `ray get-auth-token` on the head and give "
                                      f"it here as RAY_AUTH_TOKEN (or in ~/.ray/auth_token)") from None
                raise GpLossError(f"cannot join the Ray cluster at {address}: {detail}. Start its head with "
                                  f"`ray start --head --port PORT` and give --ray-address HOST:PORT") from None
            self._owns = True
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        wants_gpu = options.device != "cpu" and gpus > 0
        if options.workers_per_gpu is not None:
            if gpus == 0:
                self.close()
                raise GpLossError("--workers-per-gpu needs GPUs, but the Ray cluster has none; "
                                  "use --workers N instead")
            self.workers = options.workers or options.workers_per_gpu * gpus
            per_gpu = options.workers_per_gpu
        else:
            self.workers = options.workers or (max(1, cpus) if address is not None else 1)
            per_gpu = -(-self.workers // gpus) if wants_gpu else None
        self._sharers = per_gpu
        self._remote = ray.remote(_job).options(
            num_cpus=1, num_gpus=(1.0 / per_gpu) if per_gpu else 0,
            max_retries=MAX_RETRIES, retry_exceptions=False)
        self._outstanding: set = set()  # jobs not yet taken: cancelled by abort()

    def _start(self, fn: Callable, args: tuple) -> Any:
        ref = self._remote.remote(fn, args, self._sharers)
        self._outstanding.add(ref)
        return ref

    def _take(self, ref: Any) -> Any:
        """The job's result; its reference is dropped so that Ray can free the result."""
        try:
            return _get(ref)
        finally:
            self._outstanding.discard(ref)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        refs = [self._start(fn, (item,)) for item in items]
        return (self._take(ref) for ref in refs)

    def submit(self, fn: Callable, *args) -> RayFuture:
        return RayFuture(self._start(fn, args), self)

    def wait_first(self, pending: Collection[Any], timeout: float | None = None) -> tuple[set, set]:
        import ray
        by_ref = {future.ref: future for future in pending}
        refs = list(by_ref)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:  # everything else already finished as well, so that none waits a round
            more, rest = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready = ready + more
        done = {by_ref[ref] for ref in ready}
        return done, {by_ref[ref] for ref in rest}

    def missing_hint(self) -> str:
        return "`ray status` lists the nodes that joined the cluster and their CPUs"

    def close(self) -> None:
        import ray
        self._outstanding = set()
        if getattr(self, "_owns", False) and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def abort(self) -> None:
        import ray
        if ray.is_initialized():
            for ref in getattr(self, "_outstanding", ()):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished or already gone: nothing to cancel
                    pass
        self.close()

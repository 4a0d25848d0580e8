"""A map over workers: serial, multiprocessing or SCOOP.

All three return results lazily and in order, so a search can record each
result as soon as it (and those before it) are done. Jobs that carry their
own seeds give the same results whichever backend runs them: the choice
changes speed only. A job must be a top-level function of picklable data.

Besides the ordered map, ``submit`` and ``wait_first`` give asynchronous jobs:
submit one job at a time and take results as they finish, in whatever order
(an optimiser that proposes the next point as soon as a worker is free).

SCOOP: start the script under ``python -m scoop -n N script.py …`` (add
``--hostfile FILE --tunnel`` for several machines); ``auto`` then picks SCOOP.
SCOOP is no longer developed, hence the pluggable choice.

A worker SCOOP could not start (a host down, ssh refused) is not an error to
SCOOP: its jobs run on the workers that did start. :class:`WorkerInfo` (what
each worker answers to a warm-up job) and :func:`missing_workers` let a search
say so, naming the hosts of the hostfile no worker answered from.

A worker SCOOP 0.7 loses mid-run is worse: its broker (a thread of the
``python -m scoop`` launcher) dies of ``ZMQError: Host unreachable`` the next
time it hands that worker a job, and every later job then waits forever. Under
SCOOP the origin therefore asks the broker for a status every few seconds
(:class:`_BrokerWatchdog`); when it has not answered for
``GP_LOSS_SCOOP_BROKER_TIMEOUT_S`` seconds (default 60) the search stops with
exit status 1, like a dead multiprocessing worker: the checkpoint is kept and
``--resume`` completes the run. It stops the search at once when the broker
closes its connection: the ``python -m scoop`` process itself was killed, and the
search then ends its local sibling workers on its way out.

No worker outlives its search, however the search ends (SIGKILL from a scheduler
or the out-of-memory killer included): each multiprocessing worker exits as soon
as the process that started it is gone (:func:`_die_with_parent`). The count of
workers is checked against what the machine can hold
(:func:`gp_loss.runtime.worker_limits.check_worker_count`) before any is started.
"""
from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
import multiprocessing
import os
from pathlib import Path
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Collection, Iterable, Iterator, TypeVar

from gp_loss.errors import GpLossError
from gp_loss.runtime.worker_limits import check_worker_count

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


def _host_names(label: str, origin: str) -> set[str]:
    """The names a hostfile may give the host of ``label`` (``origin``: the label of the search's own host)."""
    name, _, rest = label.partition(" (")
    names = {name, name.split(".")[0]}
    if rest:
        names.add(rest.rstrip(")"))
    if label == origin:  # a hostfile names the origin as localhost, 127.0.0.1 or by name
        names |= {"localhost", "127.0.0.1", socket.getfqdn()}
    return names


def scoop_hosts() -> list[tuple[str, int]] | None:
    """Hosts and worker counts the ``python -m scoop`` launcher of this process was given, or ``None``.

    The ``--hostfile`` on the launcher's command line (a few processes up, Linux), else
    the allocation of SLURM, PBS or SGE that SCOOP reads; ``None`` where neither is found.
    """
    if not scoop_running():
        return None
    try:
        from scoop import utils
    except ImportError:  # pragma: no cover - scoop is a dependency
        return None
    pid = os.getpid()
    for _ in range(4):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[-1].split()[1])
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            break
        if "scoop" in argv[1:3] and "--hostfile" in argv[:-1]:
            try:
                return [(h, int(n)) for h, n in utils.getHosts(str(cwd / argv[argv.index("--hostfile") + 1]))]
            except Exception:  # noqa: BLE001 - SCOOP's own parsing errors; its launcher has reported them
                return None
    try:
        return utils.getHosts() if utils.getEnv() in ("SLURM", "PBS", "SGE") else None
    except Exception:  # noqa: BLE001 - a scheduler's list SCOOP cannot read
        return None


def missing_workers(infos: list[WorkerInfo], requested: int, waited_s: float,
                    hosts: list[tuple[str, int]] | None = None) -> str | None:
    """One line saying that fewer than ``requested`` workers answered, or ``None`` when all did.

    ``hosts``: the hosts and counts asked of SCOOP (:func:`scoop_hosts`); those no
    worker answered from are named.
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
    return line + (". A host down or refusing SSH shows as an 'ssh:' line in SCOOP's log above"
                   if scoop_running() else "")


class _BrokerWatchdog:
    """Ends this process (exit 1, the ``--resume`` hint on stderr) once SCOOP's broker stops answering.

    Probes from a socket of its own: a status request for a job id no worker has,
    which a live broker answers at once whatever else it is doing.
    """

    PROBE_S = 5.0
    CONNECT_WAIT_S = 10.0

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gp-loss scoop broker watchdog", daemon=True)

    @classmethod
    def start_here(cls) -> "_BrokerWatchdog | None":
        """Started on SCOOP's origin (where the search runs), else ``None``."""
        import scoop
        broker = getattr(scoop, "BROKER", None)
        if not getattr(scoop, "IS_ORIGIN", False) or broker is None:
            return None
        timeout_s = float(os.environ.get("GP_LOSS_SCOOP_BROKER_TIMEOUT_S", "60"))
        if timeout_s <= 0:  # 0: no watchdog
            return None
        watchdog = cls(timeout_s)
        watchdog._address = f"tcp://{broker.hostname}:{broker.task_port}"
        watchdog._thread.start()
        # Connected before the search starts: a broker that dies before its connection is made sends no
        # disconnection, and would be noticed only after timeout_s.
        watchdog._connected.wait(cls.CONNECT_WAIT_S)
        return watchdog

    def _run(self) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # The broker's process ending (`python -m scoop` killed) closes its connections at once:
        # the search need not wait out the timeout to know that no job will come back.
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        sock.connect(self._address)
        last_answer = time.monotonic()
        try:
            while not self._stop.is_set():
                sock.send_multipart([b"SR", b"gp-loss-watchdog-probe"])  # STATUS_REQ
                deadline = time.monotonic() + self.PROBE_S
                while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                    ready = dict(poller.poll(int(min(left, 0.5) * 1000)))
                    if sock in ready:
                        sock.recv_multipart()
                        last_answer = time.monotonic()
                        self._connected.set()
                    event = recv_monitor_message(monitor)["event"] if monitor in ready else None
                    if event == zmq.EVENT_CONNECTED:
                        self._connected.set()
                    if event == zmq.EVENT_DISCONNECTED and not self._stop.is_set():
                        self._give_up("SCOOP's broker closed its connection: the `python -m scoop` process "
                                      "ended (killed?)")
                silent = time.monotonic() - last_answer
                if silent >= self.timeout_s and not self._stop.is_set():
                    self._give_up(f"SCOOP's broker has not answered for {silent:.0f} s: a worker process died "
                                  f"(killed, or out of memory?) and SCOOP 0.7 cannot go on without it")
                self._stop.wait(max(0.0, deadline - time.monotonic()))
        finally:
            sock.disable_monitor()
            monitor.close()
            sock.close()
            context.term()

    def _give_up(self, why: str) -> None:
        sys.stdout.flush()
        print(f"error: {why}. Finished work is kept: continue with --resume RUN_DIR (the run directory named above)",
              file=sys.stderr, flush=True)
        # The search's own thread waits inside SCOOP for a job that will never come back: end the
        # process, and its scoop.launch parent and sibling workers, so that none is left behind and
        # `python -m scoop` (if alive) exits non-zero (see run_script).
        fail_scoop_launch()
        os._exit(1)

    def stop(self) -> None:
        self._stop.set()


class Mapper:
    """A lazy, ordered ``map(fn, items)`` over the chosen backend; ``close()`` when done.

    ``workers``: how many processes run jobs at once (1 for serial; SCOOP's own
    count under ``python -m scoop``); more than the machine can hold is a
    :class:`GpLossError` (``device``, the training device setting, adds the GPUs'
    bound). Call it from the thread that created it: a multiprocessing worker is
    tied to the thread that starts it (:func:`_die_with_parent`).
    """

    def __init__(self, kind: str = "auto", workers: int = 1, device: str | None = None):
        kind = self.check(kind, workers, device)
        self.kind = kind
        self._pool = None
        self._watchdog = None
        if kind == "multiprocessing":
            # spawn: the workers start clean instead of inheriting torch's thread pools by fork;
            # jobs set their own torch thread count.
            # A process pool whose map fails (BrokenProcessPool -> WorkerDied) when a worker is
            # killed, where multiprocessing.Pool would wait forever for the job it lost.
            # Read by gp_loss/__init__.py in each worker as it starts: the workers of this process die with it.
            os.environ[WORKER_MARK] = str(os.getpid())
            self._pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(os.getpid(), workers))
        if kind == "scoop":
            import scoop
            self.workers = int(getattr(scoop, "SIZE", 1) or 1)
            self._watchdog = _BrokerWatchdog.start_here()
        else:
            self.workers = workers if kind == "multiprocessing" else 1

    @staticmethod
    def check(kind: str = "auto", workers: int = 1, device: str | None = None) -> str:
        """Raise :class:`GpLossError` if a Mapper of these settings cannot start here; else the backend it picks.

        Starts nothing: a script calls it before it creates anything. ``device``: the
        training device setting (adds the GPUs' bound on the workers), ``None`` if unknown.
        """
        if kind not in MAPS:
            raise GpLossError(f"--map must be one of {', '.join(MAPS)}, got {kind!r}")
        if workers < 1:
            raise GpLossError(f"--workers must be at least 1, got {workers}")
        if kind == "auto":
            kind = "scoop" if scoop_running() else ("multiprocessing" if workers > 1 else "serial")
        if kind == "scoop" and not scoop_running():
            raise GpLossError("--map scoop needs the script started as `python -m scoop -n N script.py ...`")
        if kind == "multiprocessing":
            check_worker_count(workers, device)
        return kind

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
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            _forget_worker_mark()

    def __enter__(self) -> "Mapper":
        return self

    def __exit__(self, *exc) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
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
            _forget_worker_mark()


# -- no worker outlives its search ---------------------------------------------------

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WORKER_MARK = "GP_LOSS_SEARCH_PID"  # set while a pool starts workers: see gp_loss/__init__.py


def _forget_worker_mark() -> None:
    """No more workers of this process start: later children of it (a subprocess) are not marked."""
    if os.environ.get(WORKER_MARK) == str(os.getpid()):
        del os.environ[WORKER_MARK]
PARENT_POLL_S = 0.5
# In a multiprocessing worker: how many workers its pool has (None elsewhere, and under SCOOP).
_POOL_WORKERS: int | None = None


def pool_workers() -> int | None:
    """The worker count of the pool this process is a worker of (``None`` outside a multiprocessing pool)."""
    return _POOL_WORKERS


def _start_worker(parent: int, workers: int) -> None:
    """Pool worker initializer: remember the pool's size (:func:`pool_workers`; the workers sharing a GPU
    cap their memory by it), and die with ``parent`` (:func:`_die_with_parent`)."""
    global _POOL_WORKERS
    _POOL_WORKERS = workers
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker as soon as ``parent`` (the search process) is gone.

    Without it a worker outlives a search killed by SIGKILL: an idle one waits on a
    job queue whose writing end it holds itself, so it never sees end-of-file, and a
    busy one finishes its training and then waits the same way; both keep their memory
    until killed by hand.
    Linux delivers SIGKILL the moment the parent dies (``PR_SET_PDEATHSIG``; strictly,
    when the parent's thread that started the worker ends, hence the Mapper's
    one-thread rule). Elsewhere, and as a second guard, a thread notices the parent's
    death within :data:`PARENT_POLL_S` seconds: the worker is handed to another
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


# -- ending a SCOOP run with a non-zero status ---------------------------------------

def fail_scoop_launch() -> None:
    """Terminate this SCOOP root's ``scoop.launch`` parent and its other workers.

    SCOOP 0.7.2's launcher drops the root's exit status; ending the launcher makes
    ``python -m scoop`` exit non-zero (241), so a failed search is not reported as a success.
    """
    parent = os.getppid()
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:  # not Linux, or gone: nothing to carry the status
        return
    if b"scoop.launch" not in cmdline:
        return
    for pid in _children(parent):
        if pid != os.getpid():
            _kill(pid)
    _kill(parent)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields_after_name = stat.rsplit(")", 1)[-1].split()
            if len(fields_after_name) > 1 and fields_after_name[1] == str(pid):
                found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass

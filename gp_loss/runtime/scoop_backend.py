"""SCOOP as a backend: the script runs under ``python -m scoop -n N script.py …``.

Add ``--hostfile FILE --tunnel`` for several machines; ``--map auto`` then picks
SCOOP. SCOOP is no longer developed (its last release is 0.7.2), so its plumbing
lives here, apart from the other backends.

A worker SCOOP could not start (a host down, ssh refused) is not an error to
SCOOP: its jobs run on the workers that did start. :func:`scoop_hosts` lets a
search name the hosts of the hostfile no worker answered from.

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
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import sys
import threading
import time
from typing import Any, Callable, Collection, Iterable, Iterator

from gp_loss.errors import GpLossError
from gp_loss.runtime.backend import Backend, BackendOptions


class ScoopBackend(Backend):
    """SCOOP's workers (as many as ``python -m scoop -n N`` started, on every host of its hostfile)."""

    name = "scoop"

    def __init__(self, options: BackendOptions):
        import scoop
        self.workers = int(getattr(scoop, "SIZE", 1) or 1)
        self._watchdog = _BrokerWatchdog.start_here()

    @classmethod
    def available(cls, options: BackendOptions) -> bool:
        return scoop_running()

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        if not scoop_running():
            raise GpLossError("--map scoop needs the script started as `python -m scoop -n N script.py ...`")
        if options.workers_per_gpu is not None:
            raise GpLossError("--workers-per-gpu starts its own worker processes; under SCOOP give "
                              "`python -m scoop -n K*GPUS` instead (worker i trains on GPU i mod GPUS)")

    @classmethod
    def planned_workers(cls, options: BackendOptions) -> int:
        import scoop
        return int(getattr(scoop, "SIZE", 1) or 1)

    @classmethod
    def launch_command(cls, python: str, script: str, workers: int) -> list[str]:
        return [python, "-m", "scoop", "-n", str(workers), script]

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        from scoop import futures
        return futures.map(fn, list(items))

    def submit(self, fn: Callable, *args) -> Any:
        from scoop import futures
        return futures.submit(fn, *args)

    def wait_first(self, pending: Collection[Any], timeout: float | None = None) -> tuple[set, set]:
        from scoop import futures
        done, not_done = futures.wait(list(pending), -1 if timeout is None else timeout,
                                      return_when=futures.FIRST_COMPLETED)
        return set(done), set(not_done)

    def expected_hosts(self) -> list[tuple[str, int]] | None:
        return scoop_hosts()

    def missing_hint(self) -> str:
        return "A host down or refusing SSH shows as an 'ssh:' line in SCOOP's log above"

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None


def scoop_running() -> bool:
    """Whether this process was started by ``python -m scoop``."""
    try:
        import scoop
    except ImportError:  # pragma: no cover - scoop is a dependency
        return False
    return bool(getattr(scoop, "IS_RUNNING", False))


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

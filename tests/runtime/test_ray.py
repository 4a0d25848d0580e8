"""The Ray backend: the same results as serial on a local Ray, on a two-node cluster, and after a worker dies."""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.parallel import check_backend, open_backend

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "runs" / "search_classification.py")
# A small search that still breeds, filters and trains several generations, and retrains its best.
SMALL = ["--evaluations", "12", "--final-top", "1", "--final-seeds", "2", "--selection-seeds", "0", "--no-progress"]


def _fails(n):
    if n == 2:
        raise ValueError(f"job {n} failed")
    return n


def test_local_ray_map_is_ordered_and_jobs_raise_their_own_errors():
    with open_backend("ray", workers=2, device="cpu") as backend:
        assert (backend.name, backend.workers, backend.needs_pickle) == ("ray", 2, True)
        results = backend(sum, [range(n) for n in (5, 1, 30, 2)])
        assert list(results) == [10, 0, 435, 1]
        futures = [backend.submit(sum, range(n)) for n in (3, 4)]
        done = set()
        while len(done) < 2:
            first, _ = backend.wait_first(set(futures) - done)
            assert first
            done |= first
        assert sorted(f.result() for f in futures) == [3, 6]
        with pytest.raises(ValueError, match="job 2 failed"):  # the job's own exception, not Ray's wrapper
            list(backend(_fails, range(4)))
    assert not ray.is_initialized()  # the local Ray it started is gone


def _gpu_share(_):
    from gp_loss.runtime.backend import gpu_sharers
    return gpu_sharers(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_workers_per_gpu_asks_ray_for_a_share_of_a_gpu_and_tells_the_job():
    # Ray schedules GPUs as resources: a local Ray told of 2 GPUs holds 2 jobs on each with K = 2,
    # and gives each job its GPU in CUDA_VISIBLE_DEVICES (what torch then sees as cuda:0).
    from gp_loss.runtime.backend import BackendOptions
    from gp_loss.runtime.ray_backend import RayBackend

    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        backend = RayBackend(BackendOptions(workers_per_gpu=2, device="cuda"))
        assert backend.workers == 4  # K x the cluster's GPUs
        shares = list(backend(_gpu_share, range(8)))
        assert {share for share, _ in shares} == {2}  # each job caps its GPU memory at 1/2
        assert {gpu for _, gpu in shares} <= {"0", "1"}
        backend.close()
        assert ray.is_initialized()  # a Ray the caller started is the caller's to stop
    finally:
        ray.shutdown()


def test_ppo_and_the_hps_optimiser_run_on_ray():
    from gp_loss.hps import maximize
    from gp_loss.pap.ppo import PPOConfig, ppo_maximize

    config = PPOConfig(rounds=3, samples=6, updates=10, seed=3)
    serial = ppo_maximize(sum, 4, config)  # sum: a picklable objective Ray's workers import by name
    with open_backend("ray", workers=2, device="cpu") as backend:
        on_ray = ppo_maximize(sum, 4, config, mapper=backend)
        hps = maximize(sum, [0, 0, 0], [4, 4, 4], budget=12, seed=0, map=backend)
    assert on_ray.history == serial.history and on_ray.mean == serial.mean
    assert len(hps.history) == 12 and all(value == sum(x) for x, value in hps.history)
    assert hps.best_value == max(value for _, value in hps.history)


def test_bad_addresses_are_user_errors(monkeypatch):
    with pytest.raises(GpLossError, match="--ray-address is empty"):
        check_backend("ray", 1, address="  ")
    for address in ("nohost", "host:port", "host:99999", "a b:1", "http://x:1"):
        with pytest.raises(GpLossError, match="HOST:PORT"):
            check_backend("ray", 1, address=address)
    monkeypatch.setenv("RAY_ADDRESS", "not an address")
    with pytest.raises(GpLossError, match="RAY_ADDRESS"):
        check_backend("ray", 1)
    with pytest.raises(GpLossError, match="--map ray"):
        check_backend("multiprocessing", 2, address="127.0.0.1:6379")
    assert check_backend("auto", 1).name == "serial"


def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path):
    port = _free_ports(1)[0]
    proc = subprocess.run([sys.executable, SCRIPT, "--map", "ray", "--ray-address", f"127.0.0.1:{port}",
                           "--out", str(tmp_path / "run"), *SMALL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


# -- end to end: a search's results do not depend on where it ran --------------------------------------

def _search(out: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, "--out", str(out), *SMALL, *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


def _results(out: Path) -> tuple:
    """What must not depend on the backend: the hall of fame and the final comparison."""
    return (json.loads((out / "hall_of_fame.json").read_text()), json.loads((out / "final.json").read_text()))


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "run"
    proc = _search(out, "--map", "serial")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _results(out)


@pytest.mark.slow
def test_local_ray_search_equals_serial(tmp_path, serial_run):
    proc = _search(tmp_path / "run", "--map", "ray", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[ray map, 2 worker(s)]" in proc.stdout
    assert _results(tmp_path / "run") == serial_run


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LoopbackRayCluster:
    """A head and a second node on this host (``ray start --block``), each with its own ports, one CPU each."""

    def __init__(self):
        # Ray's socket paths live under its temporary directory and must stay short (a Unix socket path
        # holds at most 107 bytes): not under pytest's tmp_path.
        self.temp_dir = tempfile.mkdtemp(prefix="gpray", dir="/tmp")
        self.processes: list[subprocess.Popen] = []
        ports = _free_ports(7)
        self.address = f"127.0.0.1:{ports[0]}"
        ray_cli = str(Path(sys.executable).with_name("ray"))
        common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        self.head = [ray_cli, "start", "--head", "--port", str(ports[0]), "--node-ip-address", "127.0.0.1",
                     "--include-dashboard", "false", "--temp-dir", self.temp_dir,
                     "--node-manager-port", str(ports[1]), "--object-manager-port", str(ports[2]),
                     "--dashboard-agent-listen-port", str(ports[3]), *common]
        self.node = [ray_cli, "start", "--address", self.address, "--node-ip-address", "127.0.0.1",
                     "--node-manager-port", str(ports[4]), "--object-manager-port", str(ports[5]),
                     "--dashboard-agent-listen-port", str(ports[6]), *common]

    def start(self) -> None:
        # Token authentication guards a real cluster; this one listens on loopback for one test only.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
        log = open(Path(self.temp_dir) / "cluster.log", "w")
        self.processes.append(subprocess.Popen(self.head, stdout=log, stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True))
        self._wait_for_nodes(1)
        self.processes.append(subprocess.Popen(self.node, stdout=log, stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True))
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, n: int, timeout_s: float = 120.0) -> None:
        script = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                  "print(sum(1 for node in ray.nodes() if node['Alive']))")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a Ray node exited: {(Path(self.temp_dir) / 'cluster.log').read_text()[-2000:]}")
            probe = subprocess.run([sys.executable, "-c", script, self.address], capture_output=True, text=True,
                                   timeout=60)
            if probe.returncode == 0 and probe.stdout.strip().isdigit() and int(probe.stdout.strip()) >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {n} node(s)")

    def stop(self) -> None:
        for process in reversed(self.processes):  # ray start --block stops its node's processes on SIGTERM
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    cluster = LoopbackRayCluster()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_two_node_cluster_search_equals_serial_and_missing_workers_are_reported(tmp_path, serial_run, ray_cluster):
    # Three workers asked of a cluster of two CPUs: one never answers, and --require-workers stops first.
    proc = _search(tmp_path / "short", "--map", "ray", "--ray-address", ray_cluster.address, "--workers", "3",
                   "--require-workers")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "only 2 of 3 workers answered" in proc.stderr and "ray status" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The cluster's own count (its two CPUs, one per node): both nodes run jobs.
    proc = _search(tmp_path / "run", "--ray-address", ray_cluster.address)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[ray map, 2 worker(s)]" in proc.stdout
    assert _results(tmp_path / "run") == serial_run


def _job_processes() -> list[int]:
    """Ray worker processes running a job (Ray titles them ``ray::_job`` while they do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::_job"):
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's workers in /proc")
def test_a_worker_killed_mid_search_is_retried_and_the_result_is_the_serial_one(tmp_path, serial_run):
    out = tmp_path / "run"
    cmd = [sys.executable, SCRIPT, "--out", str(out), *SMALL, "--map", "ray", "--workers", "2"]
    search = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and search.poll() is None and time.monotonic() < deadline:
        evaluations = out / "evaluations.jsonl"
        if evaluations.exists() and len(evaluations.read_text().splitlines()) >= 3:  # inside the search
            jobs = _job_processes()
            if jobs:
                killed = jobs[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = search.communicate(timeout=900)
    assert killed is not None, "no Ray job was seen running: nothing was killed"
    assert search.returncode == 0, stderr[-2000:]
    assert _results(out) == serial_run

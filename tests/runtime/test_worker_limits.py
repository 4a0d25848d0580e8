"""Worker processes: never more than the machine can hold, and none outlives the process that started it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime import worker_limits
from gp_loss.runtime.worker_limits import GPU_WORKER_BYTES, WORKER_MEMORY_BYTES, check_worker_count, worker_limit
from tests.helpers import ROOT

GIB = 1 << 30


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cpus`` cores and ``memory`` bytes available, whatever this one is."""
    def set_machine(cpus: int, memory: int | None):
        monkeypatch.setattr(worker_limits, "usable_cpus", lambda: cpus)
        monkeypatch.setattr(worker_limits, "available_memory",
                            lambda: None if memory is None else (memory, f"{memory / GIB:.1f} GiB of memory available"))
    return set_machine


def test_the_cpu_bound_is_a_few_workers_per_core(machine):
    machine(cpus=2, memory=64 * GIB)
    check_worker_count(2 * worker_limits.WORKERS_PER_CPU, "cpu")
    with pytest.raises(GpLossError) as err:
        check_worker_count(1000, "cpu")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("--workers 1000 is more worker processes than this machine can hold: at most "
                           f"{2 * worker_limits.WORKERS_PER_CPU} (")
    assert "per CPU core" in line and line.endswith(f"Give --workers {2 * worker_limits.WORKERS_PER_CPU} or fewer")


def test_the_memory_bound_is_available_memory_over_one_workers_need(machine):
    machine(cpus=64, memory=3 * WORKER_MEMORY_BYTES + WORKER_MEMORY_BYTES // 2)
    assert worker_limit("cpu")[0] == 3
    check_worker_count(3, "cpu")
    with pytest.raises(GpLossError,
                       match=r"at most 3 \(3\.5 GiB of memory available, and a worker takes about 1 GiB\)"):
        check_worker_count(4, "cpu")


def test_one_worker_is_always_allowed_and_fewer_is_an_error(machine):
    machine(cpus=1, memory=0)
    check_worker_count(1, "cpu")
    with pytest.raises(GpLossError, match="^--workers must be at least 1, got 0$"):
        check_worker_count(0)


def test_gpus_bound_the_count_by_their_memory(machine, monkeypatch):
    machine(cpus=1000, memory=1000 * GIB)
    from gp_loss.runtime import device
    monkeypatch.setattr(device, "gpu_memories", lambda spec: [4 * GPU_WORKER_BYTES, 4 * GPU_WORKER_BYTES])
    assert worker_limit(None)[0] == 1000 * GIB // WORKER_MEMORY_BYTES  # device unknown: no GPU bound
    assert worker_limit("cuda")[0] == 8
    with pytest.raises(GpLossError, match=r"^--workers-per-gpu 5 \(10 workers\) is more .* at most 8 \(2 GPU\(s\) "
                                          r".*Give --workers-per-gpu 4 or fewer$"):
        check_worker_count(10, "cuda", "--workers-per-gpu", per=2)


def test_this_machine_has_a_bound():
    limit, reason = worker_limit("cpu")
    assert 1 <= limit <= worker_limits.WORKERS_PER_CPU * (os.cpu_count() or 1) and reason


def test_search_scripts_and_backends_refuse_too_many_workers_before_starting_anything(tmp_path, monkeypatch):
    import scoop

    from gp_loss.runtime import scoop_backend
    from gp_loss.runtime.parallel import check_backend, open_backend, planned_workers

    with pytest.raises(GpLossError, match="^--workers 1000000 is more worker processes"):
        planned_workers("auto", 10**6, "cpu")
    with pytest.raises(GpLossError, match="^--workers must be at least 1, got 0$"):
        planned_workers("serial", 0, "cpu")
    with pytest.raises(GpLossError, match="more worker processes than this machine can hold"):
        open_backend("multiprocessing", 10**6)
    with pytest.raises(GpLossError, match="more worker processes than this machine can hold"):
        check_backend("auto", 10**6, "cpu")  # what a script asks before it creates its run directory
    assert check_backend("auto", 2, "cpu").name == "multiprocessing"
    assert check_backend("serial", 10**6).name == "serial"  # serial starts no worker process
    # Under `python -m scoop -n N` the count is SCOOP's own: not ours to bound.
    monkeypatch.setattr(scoop_backend, "scoop_running", lambda: True)
    monkeypatch.setattr(scoop, "SIZE", 7, raising=False)
    assert planned_workers("scoop", 10**6, "cpu") == 7

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "runs" / "search_classification.py"), "--workers", "1000000",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: --workers 1000000 is more worker processes than this machine can hold: at most ")
    assert not out.exists()


# -- no worker outlives its parent ---------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its new parent to reap it)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _kill_and_wait_for(parent: subprocess.Popen, pids: list[int], within_s: float = 10.0) -> list[int]:
    """SIGKILL ``parent``; those of ``pids`` still running ``within_s`` seconds later (killed then)."""
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


MAPPER_SCRIPT = """
import sys, time
from gp_loss.runtime.parallel import open_backend
m = open_backend("multiprocessing", workers=3)
busy = [m.submit(time.sleep, 120) for _ in range(2)]  # two workers in a job
m.submit(abs, -1).result()  # the third has answered and waits for the next job
print("ready", flush=True)
time.sleep(120)
"""

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")


@needs_proc
def test_workers_busy_or_idle_exit_when_the_search_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", MAPPER_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = [p for p in _children(parent.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 3
        # also multiprocessing's resource tracker, which goes once the workers have
        everyone = _children(parent.pid)
    finally:
        left = _kill_and_wait_for(parent, _children(parent.pid) if parent.poll() is None else [])
    assert set(workers) <= set(everyone)
    assert left == []


ORPHAN_SCRIPT = """
import os, sys, threading, time
from gp_loss.runtime.local_backends import _exit_when_orphaned
parent = os.getpid()
child = os.fork()
if child == 0:  # no parent-death signal here: only the watching thread can end it
    threading.Thread(target=_exit_when_orphaned, args=(parent, 0.05), daemon=True).start()
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


@needs_proc
def test_the_watching_thread_alone_ends_an_orphaned_worker():
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(parent.stdout.readline())
    assert _alive(child)
    assert _kill_and_wait_for(parent, [child]) == []


SCOOP_SCRIPT = """
import time
from gp_loss.runtime.parallel import open_backend

if __name__ == "__main__":
    m = open_backend("auto")
    print(m.name, sum(m(abs, range(-4, 0))), flush=True)  # every worker up and answering
    time.sleep(120)
"""


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
@needs_proc
def test_killing_python_m_scoop_ends_the_search_and_every_worker_at_once(tmp_path):
    script = tmp_path / "scoop_sleep.py"
    script.write_text(SCOOP_SCRIPT)
    launcher = subprocess.Popen([sys.executable, "-m", "scoop", "-n", "2", str(script)], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert launcher.stdout.readline().strip() == "scoop 10"
        processes = _descendants(launcher.pid)
        assert sum(b"scoop.bootstrap" in Path(f"/proc/{p}/cmdline").read_bytes() for p in processes) == 2
    finally:
        processes = _descendants(launcher.pid)
        # kill -9 of the launcher, as a scheduler's time limit does: its broker thread goes with it
        left = _kill_and_wait_for(launcher, processes)
    assert left == []


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_limit_counts_its_working_set_not_its_page_cache(tmp_path, version):
    mount = tmp_path / "cgroup"
    if version == 2:
        group, listing = mount / "job", "0::/job\n"
        files = {"memory.max": str(8 * GIB), "memory.current": str(7 * GIB),
                 "memory.stat": f"anon 1\ninactive_file {3 * GIB}\n"}
    else:
        group, listing = mount / "memory" / "job", "4:memory:/job\n0::/\n"
        files = {"memory.limit_in_bytes": str(8 * GIB), "memory.usage_in_bytes": str(7 * GIB),
                 "memory.stat": f"cache 5\ntotal_inactive_file {3 * GIB}\n"}
    group.mkdir(parents=True)
    for name, text in files.items():
        (group / name).write_text(text)
    (tmp_path / "cgroup_list").write_text(listing)
    assert worker_limits._cgroup_available(tmp_path / "cgroup_list", mount) == 4 * GIB  # 8 - (7 - 3)
    (group / ("memory.max" if version == 2 else "memory.limit_in_bytes")).write_text(
        "max\n" if version == 2 else str(2**63 - 4096))
    assert worker_limits._cgroup_available(tmp_path / "cgroup_list", mount) is None

"""A remote SCOOP worker killed mid-search (SIGKILL, on a "host" reached over SSH) never hangs the search
and never changes its result: either the search carries on and ends with the serial run's hall of fame,
or it stops with exit status 1 and ``--resume`` completes it to the serial run's evaluations.

SCOOP 0.7's broker dies when it next hands the dead worker a job; gp-loss's watchdog
(GP_LOSS_SCOOP_BROKER_TIMEOUT_S, shortened here) then stops the search. See gp_loss/runtime/scoop_backend.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "runs" / "search_classification.py"
ARGS = ["--population", "4", "--offspring", "3", "--evaluations", "30", "--final-seeds", "1",
        "--proxy-epochs", "1", "--final-epochs", "1", "--no-progress"]
KILL_AT_LINES = 8  # then kill a remote worker that waits for a job: SCOOP's worst case (its broker dies) ...
KILL_ANY_AT_LINES = 20  # ... or, if none has waited by then, a busy one (SCOOP resends its job after ~60 s)
HANG_S = 240  # no outcome within this: the search hung


def _procs(marker: str):
    """(pid, cmdline, environ) of this user's processes whose command line names ``marker``."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (p / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmd:
            yield int(p.name), cmd, env


def _remote_workers(marker: str) -> list[int]:
    """SCOOP workers started through the sshd (they have SSH_CONNECTION) for this test's run."""
    return sorted(pid for pid, cmd, env in _procs(marker)
                  if "scoop.bootstrap" in cmd and b"SSH_CONNECTION=" in env)


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime


def _idle(pids: list[int]) -> list[int]:
    """Those of ``pids`` that used no CPU for 0.3 s: waiting for a job (SCOOP's broker counts them as free)."""
    before = {pid: _cpu_ticks(pid) for pid in pids}
    time.sleep(0.3)
    return [pid for pid in pids if before[pid] == _cpu_ticks(pid) != -1]


def _lines(run: Path) -> int:
    path = run / "evaluations.jsonl"
    return len(path.read_text().split("\n")[:-1]) if path.exists() else 0


def _hall_of_fame(run):
    return json.loads((run / "hall_of_fame.json").read_text())["hall_of_fame"]


def _records(run):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "peak_memory_mib")}
            for line in (run / "evaluations.jsonl").read_text().splitlines()]


def test_killed_remote_worker_never_hangs_nor_changes_the_result(sshd, tmp_path):
    serial = tmp_path / "serial"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(serial), "--map", "serial"] + ARGS,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1 1\n127.0.0.2 2\n")
    run = tmp_path / "killed"
    log = tmp_path / "scoop.log"
    env = dict(os.environ, GP_LOSS_SCOOP_BROKER_TIMEOUT_S="15")
    start = time.monotonic()
    with open(log, "w") as out:
        scoop = subprocess.Popen([sys.executable, "-m", "scoop", "--hostfile", str(hosts), "--tunnel",
                                  "--ssh-executable", str(sshd.ssh), str(SCRIPT), "--out", str(run)] + ARGS,
                                 stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
                                 start_new_session=True)
    killed = None
    try:
        while scoop.poll() is None and time.monotonic() - start < HANG_S:
            lines = _lines(run)
            if killed is None and lines >= KILL_AT_LINES:
                workers = _remote_workers(str(tmp_path))
                assert workers, "no remote worker found to kill"
                idle = _idle(workers)
                if idle or lines >= KILL_ANY_AT_LINES:
                    os.kill((idle or workers)[0], signal.SIGKILL)
                    killed, killed_idle = time.monotonic(), bool(idle)
            time.sleep(0.05)
        hung = scoop.poll() is None
    finally:
        if scoop.poll() is None:
            os.killpg(scoop.pid, signal.SIGKILL)
            scoop.wait()
        for pid, cmd, _ in _procs(str(tmp_path)):  # what is left of the run on the "remote" host
            if "scoop" in cmd and pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    text = log.read_text()
    assert killed is not None, f"the search ended before a worker was killed:\n{text[-3000:]}"
    assert not hung, f"the search hung {HANG_S} s after a remote worker was killed:\n{text[-3000:]}"
    after = time.monotonic() - killed
    if scoop.returncode == 0:
        outcome = "carried on"
        assert _hall_of_fame(run) == _hall_of_fame(serial)
    else:
        outcome = f"stopped (exit {scoop.returncode})"
        assert "continue with --resume" in text, text[-3000:]
        assert not (run / "final.json").exists()
        resumed = subprocess.run([sys.executable, str(SCRIPT), "--resume", str(run), "--map", "serial",
                                  "--no-progress"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "resumed at generation" in resumed.stdout
        assert _hall_of_fame(run) == _hall_of_fame(serial)
        assert _records(run) == _records(serial)
    state = "waiting for a job" if killed_idle else "running a job"
    print(f"remote worker killed while {state}: search {outcome} {after:.1f} s after the kill")

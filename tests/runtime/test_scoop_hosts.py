"""Several hosts: workers that never join are reported, each worker says its host and device, and a
two-host SCOOP search over SSH (an sshd on 127.0.0.2) ends with the serial run's hall of fame."""
import json
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import search as search_mod
from gp_loss.evolution.search import Search
from gp_loss.runtime import device
from gp_loss.runtime import scoop_backend
from gp_loss.runtime.local_backends import SerialBackend
from gp_loss.runtime.parallel import WorkerInfo, host_label, missing_workers
from gp_loss.runtime.scoop_backend import ScoopBackend
from tests.helpers import ROOT

SCRIPT = ROOT / "runs" / "search_classification.py"
ARGS = ["--population", "4", "--offspring", "3", "--evaluations", "9", "--final-seeds", "1",
        "--proxy-epochs", "1", "--final-epochs", "1", "--no-progress"]


# -- unit: the report -----------------------------------------------------------------------------

def _info(pid, host="origin", dev="cpu", slot=None):
    return WorkerInfo(pid=pid, host=host, device=dev, slot=slot)


def test_all_workers_answered_is_no_line():
    assert missing_workers([_info(1), _info(2)], 2, 1.0) is None


def test_missing_workers_names_the_count_and_the_silent_hosts(monkeypatch):
    monkeypatch.setattr("gp_loss.runtime.backend.host_label", lambda: "origin")
    line = missing_workers([_info(7)], 3, 16.2, hosts=[("127.0.0.1", 1), ("127.0.0.3", 2)])
    assert "\n" not in line
    assert line.startswith("only 1 of 3 workers answered within 16 s (1 on origin)")
    assert "No worker answered from 127.0.0.3 (2 asked)" in line
    assert "127.0.0.1" not in line.split("No worker answered from")[1]  # the origin answered


def test_host_label_says_the_address_ssh_reached(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    name = host_label()
    monkeypatch.setenv("SSH_CONNECTION", "127.0.0.1 40000 127.0.0.2 2222")
    assert host_label() == f"{name} (127.0.0.2)"


def test_worker_slots_are_per_host(monkeypatch):
    monkeypatch.setattr(device.socket, "gethostname", lambda: "node/7")
    assert device._default_slot_root().name.endswith("-node_7")


def _fake_backend(cls, workers, rounds):
    """A ``cls`` backend started nowhere, whose warm-up round ``i`` is answered by ``rounds[i]`` (the last
    one repeated); the rest (``needs_pickle``, ``expected_hosts``, ``missing_hint``) is ``cls``'s own."""
    class Fake(cls):
        def __init__(self):
            self.workers, self.rounds, self.calls = workers, list(rounds), 0

        def map(self, fn, items):
            items = list(items)
            assert fn.__name__ == "prepare" and len(items) == 2 * self.workers
            self.calls += 1
            return self.rounds[min(self.calls, len(self.rounds)) - 1]

        def close(self):
            pass

    return Fake()


def _fake_search(mapper):
    return SimpleNamespace(mapper=mapper, toolbox=SimpleNamespace(map=mapper.map), config_dict={})


def test_prepare_workers_waits_for_late_workers_and_logs_each(capsys):
    a, b, c = _info(1, "h1", "cuda:0", 0), _info(2, "h2 (10.0.0.2)", "cuda:0", 0), _info(3, "h2 (10.0.0.2)", "cuda:1", 1)
    mapper = _fake_backend(ScoopBackend, 3, [[a] * 6, [a, b] * 3, [a, b, c, a, b, c]])
    infos = Search.prepare_workers(_fake_search(mapper))
    assert infos == [a, b, c] and mapper.calls == 3
    out, err = capsys.readouterr()
    assert out.splitlines() == ["worker 1 on h1: cuda:0 (slot 0 of its host)",
                                "worker 2 on h2 (10.0.0.2): cuda:0 (slot 0 of its host)",
                                "worker 3 on h2 (10.0.0.2): cuda:1 (slot 1 of its host)"]
    assert err == ""


class _FakeClock:
    """Stands in for the ``time`` module: ``sleep`` moves the clock on at once, so a wait costs nothing
    and its length is exact."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    monotonic = perf_counter

    def sleep(self, seconds):
        self.now += seconds


def test_prepare_workers_reports_workers_that_never_join(monkeypatch, capsys):
    clock = _FakeClock()
    monkeypatch.setattr(search_mod, "time", clock)
    monkeypatch.setattr(scoop_backend, "scoop_hosts", lambda: [("h1", 1), ("h9", 2)])  # its hostfile
    mapper = _fake_backend(ScoopBackend, 3, [[_info(1, "h1")] * 6])
    Search.prepare_workers(_fake_search(mapper))
    # It stops waiting once no new worker has joined for JOIN_QUIET_S, long before the warm-up's cap.
    assert search_mod.JOIN_QUIET_S <= clock.now < search_mod.WARM_UP_S
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("gp-loss: warning: only 1 of 3 workers answered")
    assert "No worker answered from h9 (2 asked)" in err[0] and "--require-workers" in err[0]
    assert err[0].endswith(f"{mapper.missing_hint()}; --require-workers makes this an error")  # SCOOP's 'ssh:' lines
    with pytest.raises(GpLossError, match=r"^--require-workers: only 1 of 3 workers answered"):
        Search.prepare_workers(_fake_search(_fake_backend(ScoopBackend, 3, [[_info(1, "h1")] * 6])), require=True)


def test_serial_prepare_prints_nothing(capsys):
    Search.prepare_workers(_fake_search(_fake_backend(SerialBackend, 1, [[_info(1), _info(1)]])), require=True)
    assert capsys.readouterr() == ("", "")


def test_require_workers_flag_reaches_the_search(monkeypatch, tmp_path, load_script):
    from gp_loss.evolution import run_search as rs, script
    seen = {}
    monkeypatch.setattr(rs, "run_search", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(GpLossError("x")))
    cli = load_script("search_classification")
    assert script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS,
                       ["--out", str(tmp_path / "r"), "--require-workers"]) == 2
    assert seen["require_workers"] is True


# -- end to end over SSH (slow) -------------------------------------------------------------------

def _scoop(hostfile, ssh, out, extra=(), timeout=300):
    cmd = [sys.executable, "-m", "scoop", "--hostfile", str(hostfile), "--tunnel"]
    if ssh:
        cmd += ["--ssh-executable", str(ssh)]
    start = time.perf_counter()
    proc = subprocess.run(cmd + [str(SCRIPT), "--out", str(out)] + ARGS + list(extra), capture_output=True,
                          text=True, timeout=timeout, cwd=out.parent)
    return proc, time.perf_counter() - start


def _hall_of_fame(run):
    return json.loads((run / "hall_of_fame.json").read_text())["hall_of_fame"]


@pytest.mark.slow
def test_two_host_scoop_search_gives_the_serial_hall_of_fame(sshd, tmp_path):
    serial = tmp_path / "serial"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(serial), "--map", "serial"] + ARGS,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1 1\n127.0.0.2 2\n")  # the origin (its root process) + 2 workers over SSH
    two = tmp_path / "two"
    proc, _ = _scoop(hosts, sshd.ssh, two, ["--require-workers"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    workers = [line for line in proc.stdout.splitlines() if line.startswith("worker ")]
    assert len(workers) == 3, proc.stdout
    assert sum("(127.0.0.2)" in line for line in workers) == 2, workers
    assert "warning: only" not in proc.stderr
    assert _hall_of_fame(two) == _hall_of_fame(serial)


@pytest.mark.slow
def test_an_unreachable_host_is_reported_before_any_training(tmp_path):
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1 1\n127.0.0.3 2\n")  # nothing listens on 127.0.0.3
    run = tmp_path / "r"
    proc, seconds = _scoop(hosts, None, run, ["--require-workers"], timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert ours[0].startswith("error: --require-workers: only 1 of 3 workers answered"), ours
    assert "No worker answered from 127.0.0.3 (2 asked)" in ours[0]
    assert "Traceback" not in proc.stderr
    assert not (run / "evaluations.jsonl").exists() or not (run / "evaluations.jsonl").read_text()
    # How soon it is reported is test_prepare_workers_reports_workers_that_never_join's to check, on a
    # fake clock: a bound on this run's wall time would only measure the machine's load.
    print(f"unreachable host: exit {proc.returncode} after {seconds:.1f} s")

"""Backends on one machine: choice, clear errors; every map lazy and in order."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.parallel import open_backend, scoop_running

ROOT = Path(__file__).resolve().parents[2]

# Jobs must be importable in the workers: builtins on picklable ranges. sum(range(n))
# is distinct for each n, so the order of the results is checked too.
QUICK = [range(n) for n in (5, 1, 30, 2)]
EXPECTED = [sum(r) for r in QUICK]


def test_bad_kind_and_workers_are_user_errors():
    with pytest.raises(GpLossError, match="--map"):
        open_backend("threads")
    with pytest.raises(GpLossError, match="--workers"):
        open_backend("serial", workers=0)


def test_scoop_needs_scoop():
    assert not scoop_running()
    with pytest.raises(GpLossError, match="python -m scoop"):
        open_backend("scoop")


def test_auto_is_serial_with_one_worker_and_multiprocessing_with_more():
    with open_backend("auto", workers=1) as m:
        assert (m.name, m.workers) == ("serial", 1)
    with open_backend("auto", workers=2) as m:
        assert (m.name, m.workers) == ("multiprocessing", 2)


def test_serial_map_is_lazy_and_ordered():
    calls = []

    def fn(v):
        calls.append(v)
        return v * 10

    m = open_backend("serial")
    results = m(fn, iter([3, 1, 2]))
    assert calls == []
    assert next(results) == 30 and calls == [3]
    assert list(results) == [10, 20]
    m.close()


def _seconds_to_sum(n: int) -> float:
    start = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - start


def test_multiprocessing_map_is_ordered_and_yields_each_result_when_it_is_done():
    with open_backend("multiprocessing", workers=2) as m:
        assert list(m(sum, QUICK)) == EXPECTED  # also starts the workers
        # One long job behind a quick one: the quick one's result comes while the long one runs.
        n = 10_000_000
        while _seconds_to_sum(n) < 0.5:
            n *= 2
        start = time.perf_counter()
        results = m(sum, [range(3), range(n), range(4)])
        first = next(results)
        first_s = time.perf_counter() - start
        rest = list(results)
        total_s = time.perf_counter() - start
        m.close()
    assert [first] + rest == [3, sum(range(n)), 6]
    assert first_s < total_s / 2


SCOOP_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from gp_loss.runtime.parallel import open_backend

if __name__ == "__main__":
    m = open_backend("auto")
    results = m(sum, [range(n) for n in (5, 1, 30, 2)])
    print(m.name, m.workers, next(results), list(results))
"""


@pytest.mark.slow
def test_scoop_map_is_ordered(tmp_path):
    script = tmp_path / "scoop_map.py"
    script.write_text(SCOOP_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, "-m", "scoop", "-n", "2", str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"scoop 2 {EXPECTED[0]} {EXPECTED[1:]}" in proc.stdout


def _dies(n):
    import os
    if n == 2:
        os._exit(9)  # as if killed (kill -9, the OOM killer) in the middle of a job
    return n


def test_a_worker_that_dies_mid_job_stops_the_map_instead_of_hanging():
    from gp_loss.runtime.parallel import WorkerDied
    with open_backend("multiprocessing", 2) as mapper:
        with pytest.raises(WorkerDied):
            list(mapper(_dies, range(4)))

"""Backend.submit / wait_first: asynchronous jobs whose results are taken as they finish."""
import os
import subprocess
import sys
import time

import pytest

from gp_loss.runtime.parallel import open_backend
from tests.helpers import ROOT


def test_serial_submit_runs_the_job_now_and_keeps_its_error_for_result():
    calls = []

    def job(v):
        calls.append(v)
        if v < 0:
            raise ValueError("negative")
        return v * 2

    with open_backend("serial") as m:
        good = m.submit(job, 4)
        assert calls == [4] and good.done() and good.result() == 8
        bad = m.submit(job, -1)
        done, not_done = m.wait_first([good, bad])
        assert done == {good, bad} and not not_done
        with pytest.raises(ValueError, match="negative"):
            bad.result()


def test_multiprocessing_results_come_as_they_finish_not_in_submission_order():
    with open_backend("multiprocessing", workers=2) as m:
        m.submit(sum, range(3)).result()  # start the workers before timing
        slow = m.submit(time.sleep, 1.5)
        quick = m.submit(sum, range(10))
        done, not_done = m.wait_first([slow, quick])
        assert done == {quick} and not_done == {slow}
        assert quick.result() == 45
        done, _ = m.wait_first(not_done)
        assert done == {slow} and slow.result() is None
        failing = m.submit(int, "x")  # raises ValueError in the worker
        m.wait_first([failing])
        with pytest.raises(ValueError):
            failing.result()
        m.close()


def test_wait_first_times_out_with_nothing_done():
    with open_backend("multiprocessing", workers=1) as m:
        slow = m.submit(time.sleep, 1.0)
        done, not_done = m.wait_first([slow], timeout=0.05)
        assert done == set() and not_done == {slow}


SCOOP_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from gp_loss.runtime.parallel import open_backend

if __name__ == "__main__":
    m = open_backend("auto")
    slow = m.submit(time.sleep, 1.0)
    quick = m.submit(sum, range(10))
    done, not_done = m.wait_first([slow, quick])
    print(m.name, quick in done, slow in not_done, quick.result())
"""


@pytest.mark.slow
def test_scoop_submit_and_wait_first(tmp_path):
    script = tmp_path / "scoop_submit.py"
    script.write_text(SCOOP_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, "-m", "scoop", "-n", "2", str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scoop True True 45" in proc.stdout

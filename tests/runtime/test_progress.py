"""Progress on screen: summary lines on stdout as each job ends, results in the items' order."""
import pytest

from gp_loss.runtime.parallel import WorkerDied, open_backend
from gp_loss.runtime.progress import Progress, map_reporting


def _square(x):
    return x * x


def test_serial_jobs_are_reported_as_each_ends_not_after_all():
    order = []

    def job(x):
        order.append(("ran", x))
        return x * x

    with open_backend("serial") as mapper:
        results = map_reporting(mapper, job, [1, 2, 3], lambda i, r: order.append(("reported", i, r)))
    assert results == [1, 4, 9]
    assert order == [("ran", 1), ("reported", 0, 1), ("ran", 2), ("reported", 1, 4), ("ran", 3), ("reported", 2, 9)]


def test_workers_give_every_result_in_the_items_order():
    reported = {}
    with open_backend("multiprocessing", 2) as mapper:
        results = map_reporting(mapper, _square, list(range(6)), reported.__setitem__)
    assert results == [x * x for x in range(6)] and reported == dict(enumerate(results))


def _die(x):
    import os
    os._exit(1)


def test_a_worker_that_dies_is_worker_died():
    with open_backend("multiprocessing", 2) as mapper, pytest.raises(WorkerDied):
        map_reporting(mapper, _die, [1, 2], lambda i, r: None)


def test_lines_go_to_stdout_and_no_bar_off_a_terminal(capsys):
    with Progress(3, "final") as progress:
        progress.at(2)
        progress.line("final: seed 1/3 | AP 0.1")
    out, err = capsys.readouterr()
    assert out == "final: seed 1/3 | AP 0.1\n" and err == ""


def test_the_bar_counts_steps_where_it_is_shown(capsys):
    with Progress(3, "final", enabled=True) as progress:
        progress.at(2)
        progress.step()
        assert progress.bar.n == 3
    assert "final:" in capsys.readouterr().err  # drawn on stderr

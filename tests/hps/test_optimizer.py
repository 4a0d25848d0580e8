"""maximize: finds a small optimum, never repeats a point, resumes exactly, survives failures, checks input."""
import concurrent.futures
import json
import math

import numpy as np
import pytest

from gp_loss.errors import GpLossError
from gp_loss.hps import STRATEGIES, maximize
from gp_loss.hps.benchmark_functions import Levy, Slow
from gp_loss.runtime.backend import Backend
from gp_loss.runtime.checkpoint import save_checkpoint

TARGET = (3, 8, 5)


def quadratic(x):
    return -float(sum((a - b) ** 2 for a, b in zip(x, TARGET)))


def _points(result):
    return [tuple(x) for x, _ in result.history]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_finds_the_optimum_of_a_small_integer_quadratic(strategy):
    result = maximize(quadratic, [0, 0, 0], [10, 10, 10], budget=30, seed=0, strategy=strategy)
    assert result.best_x == list(TARGET) and result.best_value == 0.0
    assert len(result.history) == 30 and result.stopped == "budget"
    assert len(set(_points(result))) == 30
    assert all(isinstance(v, int) for v in result.best_x)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_tiny_grid_is_exhausted_without_a_duplicate(strategy):
    calls = []

    def f(x):
        calls.append(tuple(x))
        return -float((x[0] - 1) ** 2 + (x[1] - 2) ** 2)

    result = maximize(f, [0, 0], [2, 2], budget=20, seed=3, strategy=strategy)
    assert sorted(calls) == [(a, b) for a in range(3) for b in range(3)]  # each of the 9 once
    assert result.stopped == "exhausted" and len(result.history) == 9
    assert result.best_x == [1, 2]


def test_a_serial_run_is_a_function_of_its_seed():
    a = maximize(quadratic, [0] * 3, [10] * 3, budget=14, seed=5)
    b = maximize(quadratic, [0] * 3, [10] * 3, budget=14, seed=5)
    c = maximize(quadratic, [0] * 3, [10] * 3, budget=14, seed=6)
    assert a.history == b.history
    assert a.history != c.history


class Interrupt(BaseException):
    """Stands for Ctrl-C or a kill: not an Exception, so not a failed point."""


def _interrupted_after(k):
    count = [0]

    def f(x):
        count[0] += 1
        if count[0] > k:
            raise Interrupt
        return quadratic(x)

    return f


@pytest.mark.parametrize("k", [5, 13])  # inside the design (8 points), and after it
def test_resume_continues_the_same_sequence_exactly(tmp_path, k):
    bounds = ([0] * 3, [10] * 3)
    whole = maximize(quadratic, *bounds, budget=18, seed=11, strategy="dycors")
    with pytest.raises(Interrupt):
        maximize(_interrupted_after(k), *bounds, budget=18, seed=11, run_dir=tmp_path)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    assert len(saved["records"]) == k
    calls = []

    def counting(x):
        calls.append(tuple(x))
        return quadratic(x)

    resumed = maximize(counting, *bounds, budget=18, seed=11, run_dir=tmp_path, resume=True)
    assert resumed.history == whole.history
    assert calls == _points(whole)[k:]  # nothing evaluated twice across the interruption
    # Resuming a finished run evaluates nothing more.
    again = maximize(counting, *bounds, budget=18, seed=11, run_dir=tmp_path, resume=True)
    assert again.history == whole.history and len(calls) == 18 - k


def test_resume_with_other_settings_or_without_resume_is_refused(tmp_path):
    maximize(quadratic, [0] * 3, [10] * 3, budget=9, seed=1, run_dir=tmp_path)
    with pytest.raises(GpLossError, match="already holds a checkpoint"):
        maximize(quadratic, [0] * 3, [10] * 3, budget=9, seed=1, run_dir=tmp_path)
    with pytest.raises(GpLossError, match="other settings: seed 1 \\(now 2\\)"):
        maximize(quadratic, [0] * 3, [10] * 3, budget=9, seed=2, run_dir=tmp_path, resume=True)


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.json").write_text('{"sha256": "00", "state": {"version": 1}}')
    with pytest.raises(GpLossError) as err:
        maximize(quadratic, [0] * 3, [10] * 3, budget=9, seed=1, run_dir=tmp_path, resume=True)
    assert "no readable checkpoint" in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    save_checkpoint(other, {"version": 1, "signature": {}})  # a sound file, a state missing its fields
    with pytest.raises(GpLossError, match="corrupt checkpoint in .*KeyError"):
        maximize(quadratic, [0] * 3, [10] * 3, budget=9, seed=1, run_dir=other, resume=True)


def test_failed_points_are_recorded_never_repeated_and_the_search_goes_on():
    calls = []

    def fragile(x):
        calls.append(tuple(x))
        if x[0] == 5:
            raise ValueError("diverged")
        if x[1] == 5:
            return math.nan
        if x[2] == 5:
            return "oops"
        return quadratic(x)

    result = maximize(fragile, [0] * 3, [10] * 3, budget=40, seed=2)
    assert len(calls) == 40 == len(set(calls))
    failed = [i for i, (_, v) in enumerate(result.history) if v is None]
    assert failed and sorted(result.errors) == failed
    reasons = set(result.errors.values())
    assert "ValueError: diverged" in reasons or "returned nan" in reasons
    for i in failed:
        x = result.history[i][0]
        assert 5 in x
    assert result.best_value is not None and math.isfinite(result.best_value)
    assert result.best_value >= -3.0  # the failures did not stop it from getting close to the top


def test_an_objective_that_always_fails_uses_the_budget_and_reports_no_best():
    def broken(x):
        raise RuntimeError("no GPU")

    result = maximize(broken, [0] * 2, [9] * 2, budget=10, seed=0)
    assert len(result.history) == 10 == len(set(_points(result)))
    assert result.best_x is None and result.best_value is None
    assert set(result.errors.values()) == {"RuntimeError: no GPU"}


class OutOfOrderMapper(Backend):
    """A backend whose jobs finish last-submitted-first: asynchrony without processes, deterministic."""

    name = "fake"
    needs_pickle = False  # the jobs run in this process

    def __init__(self, workers):
        self.workers = workers
        self.jobs = {}
        self.in_flight_at_submit = []

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        self.in_flight_at_submit.append([tuple(a[1]) for a in self.jobs.values()])
        self.jobs[future] = args
        self._fn = fn
        return future

    def map(self, fn, items):
        raise AssertionError("only submit and wait_first are used")

    def wait_first(self, pending, timeout=None):
        future = list(self.jobs)[-1]
        future.set_result(self._fn(*self.jobs.pop(future)))
        return {future}, set(pending) - {future}


def test_asynchronous_workers_never_get_a_pending_or_evaluated_point():
    mapper = OutOfOrderMapper(workers=3)
    submitted = []

    def f(x):
        submitted.append(tuple(x))
        return quadratic(x)

    result = maximize(f, [0] * 3, [10] * 3, budget=30, seed=4, map=mapper)
    points = _points(result)
    assert len(points) == 30 == len(set(points))
    assert sorted(points) == sorted(submitted)
    # Results arrive out of order; three points were in flight whenever one was submitted, after the start.
    assert max(len(p) for p in mapper.in_flight_at_submit) == 2
    assert result.best_value >= -2.0


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_asynchronous_workers_exhaust_a_tiny_grid_without_a_duplicate(strategy):
    # Near the end the only points left are pending ones: proposing one of them again would be a duplicate.
    mapper = OutOfOrderMapper(workers=3)
    calls = []

    def f(x):
        calls.append(tuple(x))
        return -float(abs(x[0] - 1) + abs(x[1] - 2))

    result = maximize(f, [0, 0], [2, 2], budget=20, seed=1, strategy=strategy, map=mapper)
    assert sorted(calls) == [(a, b) for a in range(3) for b in range(3)]
    assert result.stopped == "exhausted" and result.best_x == [1, 2]


def test_two_processes_evaluate_asynchronously_without_duplicates():
    problem = Slow(Levy(dim=3, upper=10), 0.02)
    result = maximize(problem, *problem.bounds, budget=20, seed=0, workers=2)
    points = _points(result)
    assert len(points) == 20 == len(set(points))
    assert all(v is not None for _, v in result.history)


def test_a_wall_time_budget_stops_early():
    import time

    def slow(x):
        time.sleep(0.05)
        return quadratic(x)

    result = maximize(slow, [0] * 3, [10] * 3, budget=100, seed=0, max_seconds=0.3)
    assert result.stopped == "time" and 1 <= len(result.history) < 10  # each evaluation sleeps 0.05 s of the 0.3


@pytest.mark.parametrize("kwargs, message", [
    (dict(lower=[0, 5], upper=[10, 4]), "lower\\[1\\] = 5 is greater than upper\\[1\\] = 4"),
    (dict(lower=[0, 0.5], upper=[10, 4]), "lower\\[1\\] must be an integer, got 0.5"),
    (dict(lower=[0, 0], upper=[10, "9"]), "upper\\[1\\] must be an integer"),
    (dict(lower=[0, 0, 0], upper=[10, 4]), "same length, got 3 and 2"),
    (dict(budget=5), "budget = 5 is smaller than the initial design of n_init = 6 points"),
    (dict(strategy="bayes"), "strategy must be one of"),
    (dict(seed=-1), "seed must be an integer in \\[0, 4294967295\\]"),
    (dict(seed=2**32), "seed must be an integer in"),
    (dict(n_init=2), "n_init must be at least d \\+ 1 = 3"),
    (dict(max_seconds=-1), "max_seconds must be a positive"),
    (dict(workers=0), "workers must be an integer of at least 1"),
])
def test_bad_input_is_a_one_line_user_error(kwargs, message):
    args = dict(lower=[0, 0], upper=[10, 10], budget=20, seed=0)
    args.update(kwargs)
    with pytest.raises(GpLossError, match=message) as err:
        maximize(quadratic, args.pop("lower"), args.pop("upper"), **args)
    assert "\n" not in str(err.value)


def test_an_unpicklable_objective_with_workers_is_a_user_error():
    with pytest.raises(GpLossError, match="must pickle"):
        maximize(lambda x: 0.0, [0, 0], [5, 5], budget=10, seed=0, workers=2)


def test_integral_floats_as_bounds_are_accepted():
    result = maximize(quadratic, [0.0, 0, 0], [10, 10.0, np.int64(10)], budget=8, seed=0)
    assert len(result.history) == 8 and all(isinstance(v, int) for v in result.history[0][0])


def test_progress_is_told_of_the_start_and_of_each_result_with_the_best_so_far(tmp_path):
    seen = []
    maximize(quadratic, [0, 0, 0], [10, 10, 10], budget=9, seed=0, run_dir=tmp_path, progress=seen.append)
    assert seen[0] == {"done": 0, "budget": 9} and [r["done"] for r in seen] == list(range(10))
    values = [r["value"] for r in seen[1:]]
    assert [r["best_value"] for r in seen[1:]] == [max(values[:k + 1]) for k in range(9)]
    assert all(r["seconds"] >= 0 and len(r["x"]) == 3 and r["error"] is None for r in seen[1:])
    # a resumed run starts where it was
    seen.clear()
    maximize(quadratic, [0, 0, 0], [10, 10, 10], budget=11, seed=0, run_dir=tmp_path, resume=True,
             progress=seen.append)
    assert seen[0] == {"done": 9, "budget": 11} and [r["done"] for r in seen[1:]] == [10, 11]

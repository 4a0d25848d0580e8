"""maximize(initial=...): the given points go first, count in the budget, are never repeated, and resume exactly."""
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.hps import maximize

BOUNDS = ([-3, -3], [3, 3])


def bowl(x):
    return -float((x[0] - 2) ** 2 + (x[1] + 1) ** 2)


def test_initial_points_are_evaluated_first_and_in_the_budget():
    calls = []

    def f(x):
        calls.append(tuple(x))
        return bowl(x)

    # An odd design's centre row is (0, 0): given first, the design does not evaluate it again.
    result = maximize(f, *BOUNDS, budget=12, seed=4, n_init=5, initial=[[0, 0], [1, -2]])
    assert calls[:2] == [(0, 0), (1, -2)]
    assert len(calls) == 12 == len(set(calls)) == len(result.history)
    assert [x for x, _ in result.history[:2]] == [[0, 0], [1, -2]]


def test_a_run_without_initial_points_draws_the_same_design_after_them():
    plain = maximize(bowl, *BOUNDS, budget=6, seed=9, n_init=6)
    given = maximize(bowl, *BOUNDS, budget=7, seed=9, n_init=6, initial=[[3, 3]])
    assert [3, 3] not in [x for x, _ in plain.history]
    assert given.history[0][0] == [3, 3] and given.history[1:] == plain.history


class Interrupt(BaseException):
    """Stands for Ctrl-C: not an Exception, so not a failed point."""


@pytest.mark.parametrize("k", [1, 4, 9])  # among the given points, in the design, after it
def test_resume_with_initial_points_continues_exactly(tmp_path, k):
    args = dict(budget=14, seed=3, initial=[[0, 0], [-3, 3]])
    whole = maximize(bowl, *BOUNDS, **args)
    count = [0]

    def interrupted(x):
        count[0] += 1
        if count[0] > k:
            raise Interrupt
        return bowl(x)

    with pytest.raises(Interrupt):
        maximize(interrupted, *BOUNDS, run_dir=tmp_path, **args)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    assert len(saved["records"]) == k and saved["signature"]["initial"] == [[0, 0], [-3, 3]]
    calls = []

    def counting(x):
        calls.append(list(x))
        return bowl(x)

    resumed = maximize(counting, *BOUNDS, run_dir=tmp_path, resume=True, **args)
    assert resumed.history == whole.history
    assert calls == [x for x, _ in whole.history[k:]]


def test_resume_with_other_initial_points_is_refused(tmp_path):
    maximize(bowl, *BOUNDS, budget=8, seed=1, run_dir=tmp_path, initial=[[0, 0]])
    with pytest.raises(GpLossError, match="other settings: initial"):
        maximize(bowl, *BOUNDS, budget=8, seed=1, run_dir=tmp_path, resume=True, initial=[[1, 0]])
    with pytest.raises(GpLossError, match="other settings: initial"):
        maximize(bowl, *BOUNDS, budget=8, seed=1, run_dir=tmp_path, resume=True)


def test_a_checkpoint_without_initial_points_keeps_its_signature(tmp_path):
    maximize(bowl, *BOUNDS, budget=7, seed=1, run_dir=tmp_path)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    assert "initial" not in saved["signature"]
    with pytest.raises(GpLossError, match="other settings: initial"):
        maximize(bowl, *BOUNDS, budget=8, seed=1, run_dir=tmp_path, resume=True, initial=[[0, 0]])


@pytest.mark.parametrize("initial, message", [
    ([[0, 4]], "initial\\[0\\]\\[1\\] = 4 is outside the bounds \\[-3, 3\\]"),
    ([[0]], "initial\\[0\\] must be a point of 2 integers"),
    ([[0, 0.5]], "initial\\[0\\] must be a point of 2 integers"),
    ([[0, 0], [1, 1], [0, 0]], "initial\\[2\\] repeats initial\\[0\\]"),
    ("00", "initial must be a list of points"),
    ([[0, 0]] + [[i, 3] for i in range(-3, 3)], "budget = 12 is smaller than the initial design of n_init = 6 "
                                                 "points after the 7 initial point\\(s\\)"),
])
def test_bad_initial_points_are_a_one_line_user_error(initial, message):
    with pytest.raises(GpLossError, match=message) as err:
        maximize(bowl, *BOUNDS, budget=12, seed=0, initial=initial)
    assert "\n" not in str(err.value)

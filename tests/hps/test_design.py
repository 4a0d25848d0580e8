"""The initial design: symmetric Latin hypercube, integer, in bounds, full rank, no duplicates."""
import numpy as np
import pytest

from gp_loss.errors import GpLossError
from gp_loss.hps.design import default_size, symmetric_latin_hypercube
from gp_loss.hps.space import Box


def _rank_ok(box, x):
    varying = box.upper > box.lower
    m = np.hstack([np.ones((len(x), 1)), x[:, varying].astype(float)])
    return np.linalg.matrix_rank(m) == m.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wide_grid_gives_a_symmetric_latin_hypercube(seed):
    box = Box.from_bounds([0, 0, 10, 0], [100, 100, 90, 100])
    n = default_size(box)
    assert n == 10  # 2(d+1)
    x = symmetric_latin_hypercube(box, n, np.random.default_rng(seed))
    assert x.shape == (10, 4) and x.dtype.kind == "i"
    assert (x >= box.lower).all() and (x <= box.upper).all()
    # Mirror rows: x[i] + x[n-1-i] is the box's lower + upper, coordinate by coordinate.
    assert (x + x[::-1] == box.lower + box.upper).all()
    # Latin: every column takes n different levels, evenly spread (one per n-th of the range).
    for j in range(4):
        levels = np.sort(x[:, j])
        assert len(set(levels.tolist())) == n
        expected = box.lower[j] + np.arange(n) * (box.upper[j] - box.lower[j]) / (n - 1)
        assert np.abs(levels - expected).max() <= 0.5 + 1e-9
    assert _rank_ok(box, x)
    assert len({tuple(r) for r in x.tolist()}) == n


def test_the_design_is_a_function_of_the_generator():
    box = Box.from_bounds([0] * 5, [30] * 5)
    a = symmetric_latin_hypercube(box, 12, np.random.default_rng(7))
    b = symmetric_latin_hypercube(box, 12, np.random.default_rng(7))
    c = symmetric_latin_hypercube(box, 12, np.random.default_rng(8))
    assert (a == b).all() and not (a == c).all()


def test_an_odd_size_has_the_centre_row():
    box = Box.from_bounds([0, 0], [10, 20])
    x = symmetric_latin_hypercube(box, 7, np.random.default_rng(0))
    assert x[3].tolist() == [5, 10]
    assert (x + x[::-1] == [10, 20]).all()


@pytest.mark.parametrize("seed", range(5))
def test_a_tiny_grid_gets_distinct_full_rank_points(seed):
    # 3 levels for 6 points: rounding collides, the duplicates must be replaced.
    box = Box.from_bounds([0, 0], [2, 2])
    x = symmetric_latin_hypercube(box, 6, np.random.default_rng(seed))
    assert len({tuple(r) for r in x.tolist()}) == 6
    assert (x >= 0).all() and (x <= 2).all()
    assert _rank_ok(box, x)


def test_the_whole_grid_as_design_and_a_fixed_dimension():
    box = Box.from_bounds([0, 4, 0], [1, 4, 1])  # the middle dimension is fixed
    assert box.grid_size == 4 and default_size(box) == 4
    x = symmetric_latin_hypercube(box, 4, np.random.default_rng(0))
    assert sorted(map(tuple, x.tolist())) == [(0, 4, 0), (0, 4, 1), (1, 4, 0), (1, 4, 1)]


def test_impossible_sizes_are_user_errors():
    box = Box.from_bounds([0] * 3, [10] * 3)
    with pytest.raises(GpLossError, match="at least d \\+ 1 = 4"):
        symmetric_latin_hypercube(box, 3, np.random.default_rng(0))
    with pytest.raises(GpLossError, match="more than the 8 points"):
        symmetric_latin_hypercube(Box.from_bounds([0] * 3, [1] * 3), 9, np.random.default_rng(0))

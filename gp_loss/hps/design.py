"""Initial experimental design: a symmetric Latin hypercube on the integer grid.

As in pySOT (Eriksson, Bindel & Shoemaker, 2019, "pySOT and POAP: An
event-driven asynchronous framework for surrogate optimization") and DYCORS
(Regis & Shoemaker, 2013): 2(d+1) points by default, each column a permutation
of n evenly spaced levels, and row ``n-1-i`` the mirror image of row ``i``
through the centre of the box. Rounded to integers, with the mirror taken after
rounding so the symmetry survives it; a point that rounding makes equal to an
earlier one is replaced by a fresh uniform draw (no duplicate evaluations, not
even in the design), and the whole design is redrawn until the matrix
``[1, X]`` (fixed dimensions left out) has full column rank, which a surrogate
with a linear trend, and any interpolating fit, needs.
"""
from __future__ import annotations

import numpy as np

from gp_loss.errors import GpLossError
from gp_loss.hps.space import Box

# Redraws before giving up on a full-rank design: for n >= d+1 points on a grid
# of at least n points, a random symmetric design is full rank almost always.
MAX_DRAWS = 200


def default_size(box: Box) -> int:
    """2(d+1) points, or the whole grid when it is smaller."""
    return min(2 * (box.dim + 1), box.grid_size)


def check_size(box: Box, n: int) -> None:
    """A one-line error unless ``n`` points can make a full-rank design without duplicates."""
    free = int(np.count_nonzero(box.upper > box.lower))
    if n < free + 1:
        raise GpLossError(f"n_init must be at least d + 1 = {free + 1} (non-fixed dimensions + 1) for a "
                          f"full-rank design, got {n}")
    if n > box.grid_size:
        raise GpLossError(f"n_init = {n} is more than the {box.grid_size} points of the grid")


def _symmetric_levels(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Levels ``1..n`` per column, shape ``(n, d)``, with row ``n-1-i`` = ``n + 1 - row i``."""
    half = n // 2
    points = np.zeros((n, d))
    if n % 2:
        points[half, :] = half + 1  # the centre row is its own mirror
    low = np.arange(1, half + 1)
    for j in range(d):
        # Row i of the top half takes level i+1 or its mirror n-i: so the column, mirrored,
        # holds every level exactly once (the Latin property).
        column = np.where(rng.random(half) < 0.5, n + 1 - low, low)
        rng.shuffle(column)
        points[:half, j] = column
    points[n - half:] = n + 1 - points[:half][::-1]
    return points


def _is_full_rank(box: Box, x: np.ndarray) -> bool:
    varying = box.upper > box.lower
    matrix = np.hstack([np.ones((x.shape[0], 1)), box.to_unit(x)[:, varying]])
    return int(np.linalg.matrix_rank(matrix)) == matrix.shape[1]


def symmetric_latin_hypercube(box: Box, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct integer points in ``box``, shape ``(n, d)``, from ``rng``; full rank.

    Raises :class:`GpLossError` if ``n`` cannot make such a design (see :func:`check_size`).
    """
    check_size(box, n)
    half = n // 2
    for _ in range(MAX_DRAWS):
        unit = (_symmetric_levels(n, box.dim, rng) - 1) / max(n - 1, 1)
        x = np.empty((n, box.dim), dtype=np.int64)
        x[:half] = box.round(box.lower + unit[:half] * box.width)
        if n % 2:
            x[half] = box.round(box.lower + 0.5 * box.width)
        # Mirror after rounding: lower + upper - x is an integer inside the box.
        x[n - half:] = (box.lower + box.upper) - x[:half][::-1]
        seen: set[tuple[int, ...]] = set()
        for i in range(n):
            while tuple(x[i]) in seen:
                x[i] = box.uniform(rng, 1)[0]
            seen.add(tuple(x[i]))
        if _is_full_rank(box, x):
            return x
    raise GpLossError(f"no full-rank design of {n} distinct points found in {MAX_DRAWS} draws; "
                      f"give a larger n_init or wider bounds")

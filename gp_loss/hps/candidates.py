"""Candidate points: perturbations of the best point, uniform draws, and the duplicate filter.

Candidates are integer points of shape ``(m, d)``. A candidate already
evaluated (failed ones included) or pending is never kept, which is where this
differs from pySOT (Eriksson, Bindel & Shoemaker, 2019), whose rounding of
integer variables can propose a point it has already evaluated.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import truncnorm

from gp_loss.hps.space import Box

Point = tuple[int, ...]


def perturb(box: Box, rng: np.random.Generator, center: np.ndarray, n: int, radius: float,
            prob: float | None = None) -> np.ndarray:
    """``n`` integer points around ``center`` ``(d,)``, shape ``(n, d)``.

    Each coordinate is perturbed with probability ``prob`` (``None``: all of
    them; at least one always is) by a normal truncated to the box, with
    ``sigma = radius * (upper - lower)`` but at least 1, since a smaller step
    rounds back onto the same integer (Regis & Shoemaker, 2013, DYCORS).
    Fixed dimensions (lower == upper) are never perturbed.
    """
    varying = np.flatnonzero(box.upper > box.lower)
    points = np.tile(np.asarray(center, dtype=float), (n, 1))
    if varying.size == 0 or n == 0:
        return points.astype(np.int64)
    lower, upper = box.lower[varying].astype(float), box.upper[varying].astype(float)
    sigma = np.maximum(radius * (upper - lower), 1.0)
    c = points[:, varying]
    draws = truncnorm.rvs((lower - c) / sigma, (upper - c) / sigma, loc=c, scale=sigma,
                          size=c.shape, random_state=rng)
    if prob is None:
        mask = np.ones(c.shape, dtype=bool)
    else:
        mask = rng.random(c.shape) < prob
        # A candidate equal to the centre is wasted: force one coordinate in the rows with none.
        empty = np.flatnonzero(~mask.any(axis=1))
        mask[empty, rng.integers(0, varying.size, size=empty.size)] = True
    c[mask] = draws[mask]
    points[:, varying] = c
    return box.round(points)


def fresh(candidates: np.ndarray, taken: set[Point]) -> np.ndarray:
    """The rows of ``candidates`` ``(m, d)`` not in ``taken`` and not repeated, in first-seen order."""
    keep, seen = [], set()
    for i, row in enumerate(map(tuple, candidates.tolist())):
        if row not in taken and row not in seen:
            seen.add(row)
            keep.append(i)
    return candidates[keep]


def scan_free(box: Box, taken: set[Point], n: int) -> np.ndarray:
    """Up to ``n`` free grid points found by walking the grid in order (the last resort).

    Only reached when random draws found nothing new, i.e. the grid is nearly
    full; an empty result means it is exhausted.
    """
    ranges = [range(int(a), int(b) + 1) for a, b in zip(box.lower, box.upper)]
    found = []
    for point in itertools.product(*ranges):
        if point not in taken:
            found.append(point)
            if len(found) >= n:
                break
    return np.array(found, dtype=np.int64).reshape(len(found), box.dim)


def fresh_candidates(box: Box, rng: np.random.Generator, generated: np.ndarray, taken: set[Point],
                     center: np.ndarray | None) -> np.ndarray:
    """The strategy's ``generated`` candidates that are new; if none is, wider and wider ones.

    Order of fallbacks: perturbations of ``center`` with the whole range as
    sigma, uniform draws over the box, then a scan of the grid. Empty only
    when every grid point is evaluated or pending.
    """
    if len(taken) >= box.grid_size:
        return np.empty((0, box.dim), dtype=np.int64)
    n = max(len(generated), 1)
    out = fresh(generated, taken)
    if len(out) == 0 and center is not None:
        out = fresh(perturb(box, rng, center, n, radius=1.0), taken)
    if len(out) == 0:
        out = fresh(box.uniform(rng, n), taken)
    if len(out) == 0:
        out = scan_free(box, taken, n)
    return out


def min_distance(box: Box, candidates: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distance ``(m,)`` in the unit box from each candidate to the nearest of ``others`` ``(k, d)``."""
    if len(others) == 0:
        return np.full(len(candidates), np.inf)
    return cdist(box.to_unit(candidates), box.to_unit(others)).min(axis=1)


def unit_rescale(values: np.ndarray) -> np.ndarray:
    """Map ``values`` linearly onto ``[0, 1]``; all ones when they are all equal (as pySOT does)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.ones_like(values, dtype=float)
    return (values - lo) / (hi - lo)

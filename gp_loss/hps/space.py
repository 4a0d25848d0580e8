"""The search space: a box of integers, ``lower[i] <= x[i] <= upper[i]``, and its unit-box scaling.

Every piece of the optimiser (design, surrogate, strategies) works on integer
points of shape ``(n, d)``; the surrogate and the distance merit see them
scaled to ``[0, 1]^d`` so that a wide dimension does not dominate a narrow one.
A dimension whose lower and upper bound are equal is fixed: it scales to 0.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from gp_loss.errors import GpLossError

# numpy's and the benchmark's seeds take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def _as_int(value, what: str, index: int) -> int:
    # bool is an int subclass, but True as a bound is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and math.isfinite(float(value)):
            return int(value)
        raise GpLossError(f"{what}[{index}] must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Box:
    """Integer bounds: ``lower`` and ``upper``, each of shape ``(d,)``, inclusive."""

    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def from_bounds(cls, lower, upper) -> "Box":
        """Check user bounds (same length, integers, lower <= upper) and build the box."""
        try:
            lower, upper = list(lower), list(upper)
        except TypeError:
            raise GpLossError("lower and upper must be sequences of integers") from None
        if not lower:
            raise GpLossError("lower and upper must have at least one dimension")
        if len(lower) != len(upper):
            raise GpLossError(f"lower and upper must have the same length, got {len(lower)} and {len(upper)}")
        lo = [_as_int(v, "lower", i) for i, v in enumerate(lower)]
        hi = [_as_int(v, "upper", i) for i, v in enumerate(upper)]
        for i, (a, b) in enumerate(zip(lo, hi)):
            if a > b:
                raise GpLossError(f"lower[{i}] = {a} is greater than upper[{i}] = {b}")
        return cls(np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64))

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    @property
    def width(self) -> np.ndarray:
        """``upper - lower`` as floats, shape ``(d,)``."""
        return (self.upper - self.lower).astype(float)

    @property
    def grid_size(self) -> int:
        """How many integer points the box holds (a Python int: it can be astronomically large)."""
        return math.prod(int(b - a + 1) for a, b in zip(self.lower, self.upper))

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Points ``(n, d)`` scaled to ``[0, 1]^d``; fixed dimensions map to 0."""
        width = self.width
        return (np.asarray(x, dtype=float) - self.lower) / np.where(width > 0, width, 1.0)

    def round(self, x: np.ndarray) -> np.ndarray:
        """Real points ``(n, d)`` rounded to the nearest integers and clipped into the box."""
        return np.clip(np.rint(x), self.lower, self.upper).astype(np.int64)

    def uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` integer points drawn uniformly from the box, shape ``(n, d)``."""
        return rng.integers(self.lower, self.upper, endpoint=True, size=(n, self.dim))


def check_seed(seed) -> int:
    """The seed as an int in ``[0, 2**32 - 1]``, or a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise GpLossError(f"seed must be an integer in [0, {MAX_SEED}] (2**32 - 1), got {seed!r}")
    return int(seed)

"""One evaluation of the user's objective, made safe to run in a worker process.

An objective that raises, or returns something that is not a finite number,
is a failed point, not a crash: the reason comes back as text (exceptions from
user code need not pickle), the optimiser records it and goes on.
"""
from __future__ import annotations

import math
from typing import Callable


def evaluate(objective: Callable[[list[int]], float], x: list[int]) -> tuple[float | None, str | None]:
    """``(value, None)`` for a finite value, ``(None, reason)`` otherwise. Top-level: picklable."""
    try:
        raw = objective(list(x))
    except Exception as err:  # any error of the user's code is a failed point
        return None, f"{type(err).__name__}: {err}"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, f"returned {type(raw).__name__} {raw!r}, not a number"
    if not math.isfinite(value):
        return None, f"returned {value}"
    return value, None

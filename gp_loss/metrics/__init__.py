"""Task metrics, computed as the benchmarks of each task define them (COCO AP for detection)."""
from __future__ import annotations

import statistics


def mean_defined(values: list[float | None]) -> float | None:
    """Mean of the values that are defined (a metric is ``None`` where it has nothing to measure)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def std_defined(values: list[float | None]) -> float | None:
    """Population standard deviation of the defined values (``None`` if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.pstdev(present) if present else None

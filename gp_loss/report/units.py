"""How a report shows a metric's value: one scale for every number of every report.

Every metric gp-loss trains for (accuracy, COCO AP, mIoU, BF1, boundary IoU) is a
fraction in [0, 1] in the run's files, and a failed training scores 0. The papers
give these in points (AP 38.7, mIoU 72.1), so every report shows each value ×100
with two decimals, and says so beside the metric's name: the proxy's validation
value, the final test value and a baseline's value can then be read side by side.
"""
from __future__ import annotations

import math

SCALE = 100
UNIT = "×100"


def metric_value(value: object) -> str:
    """``value`` (a fraction from a run file) as the reports show it: 0.9512 -> ``95.12``; ``–`` if not finite."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{SCALE * value:.2f}"
    return "–"


def metric_gain(value: object) -> str:
    """A difference of two values, signed: 0.012 -> ``+1.20``."""
    text = metric_value(value)
    return text if text == "–" or text.startswith("-") else "+" + text


def metric_label(name: str) -> str:
    """The metric's name with the scale its values are shown in: ``validation mIoU (×100)``."""
    return f"{name} ({UNIT})"


def scaled(value: float) -> float:
    """``value`` on the scale the reports show (for a chart's axis)."""
    return SCALE * value

"""Funnel statistics: per stage, candidates in, rejected, why, and time spent.

Rejections for the time limit are counted apart (``too_slow``): they are the one
verdict that could differ on a machine with more or less to do, so a run must be
able to say how many there were (:func:`gp_loss.timeout.load_dependence`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from gp_loss.filters.base import StageResult
from gp_loss.timeout import TOO_SLOW

_NUMBER = re.compile(r"(?<![\w.])(?<!class )(?<!w=)(?<!bound )(?<!eta )(?<!chance )(-?\d+(\.\d+)?(e[-+]?\d+)?|nan|inf)(?!\w)", re.IGNORECASE)  # measured values only: class 0, w=0.5, bound 1e4, fp32 stay


@lru_cache(maxsize=4096)  # the same few hundred reasons recur for every rejected candidate
def reason_key(reason: str) -> str:
    """A reason with its numbers blanked, so that rejections group by cause."""
    return _NUMBER.sub("#", reason)[:120]


@dataclass
class StageStats:
    entered: int = 0
    rejected: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    # reason key -> the first reason counted under it, with its measured numbers (for reports)
    examples: dict = field(default_factory=dict)
    too_slow: int = 0  # of ``rejected``: rejected for the time limit


class Funnel:
    """Counts of a stage pipeline; ``record`` every verdict, then print or save."""

    def __init__(self, stage_names: list[str]):
        self.stages: dict[str, StageStats] = {n: StageStats() for n in stage_names}
        self.candidates = 0
        self.passed = 0

    def record(self, result: StageResult) -> None:
        s = self.stages.get(result.stage)
        if s is None:  # (not setdefault: it would build a StageStats for every record)
            s = self.stages[result.stage] = StageStats()
        s.entered += 1
        s.seconds += result.seconds
        if not result.passed:
            s.rejected += 1
            if result.timed_out:
                s.too_slow += 1
            key = reason_key(result.reason)
            s.reasons[key] += 1
            if key not in s.examples:
                s.examples[key] = result.reason[:200]

    def merge(self, other: "Funnel") -> None:
        self.candidates += other.candidates
        self.passed += other.passed
        for name, o in other.stages.items():
            s = self.stages.setdefault(name, StageStats())
            s.entered += o.entered
            s.rejected += o.rejected
            s.seconds += o.seconds
            s.too_slow += o.too_slow
            s.reasons.update(o.reasons)
            for key, example in o.examples.items():
                s.examples.setdefault(key, example)

    @property
    def too_slow(self) -> int:
        """Candidates rejected for the time limit (each stops at its first rejection: one stage each)."""
        return sum(s.too_slow for s in self.stages.values())

    @property
    def rejection_rate(self) -> float:
        return 1 - self.passed / self.candidates if self.candidates else 0.0

    def to_dict(self) -> dict:
        return {
            "candidates": self.candidates,
            "passed": self.passed,
            "rejected_fraction": self.rejection_rate,
            "too_slow": self.too_slow,
            # The stages in pipeline order: JSON files are written with sorted keys.
            "order": list(self.stages),
            "stages": {n: {"in": s.entered, "rejected": s.rejected, "too_slow": s.too_slow, "seconds": s.seconds,
                           "reasons": dict(s.reasons.most_common()), "examples": dict(s.examples)}
                       for n, s in self.stages.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Funnel":
        stages = data.get("stages", {})
        f = cls(data.get("order") or list(stages))
        f.candidates, f.passed = data.get("candidates", 0), data.get("passed", 0)
        for n, s in stages.items():
            reasons = Counter(s["reasons"])
            # A funnel saved before rejections for time were counted apart: its reasons say which they were.
            too_slow = s.get("too_slow", sum(c for r, c in reasons.items() if r.startswith(TOO_SLOW)))
            f.stages[n] = StageStats(s["in"], s["rejected"], s["seconds"], reasons, dict(s.get("examples", {})),
                                     too_slow)
        return f

    def table(self, top_reasons: int = 2) -> str:
        """A compact text table of the funnel."""
        lines = [f"{'stage':<12}{'in':>8}{'rejected':>10}{'passed':>8}{'ms/cand':>9}  top reasons"]
        for name, s in self.stages.items():
            ms = 1000 * s.seconds / s.entered if s.entered else 0.0
            top = "; ".join(f"{r} ({c})" for r, c in s.reasons.most_common(top_reasons))
            lines.append(f"{name:<12}{s.entered:>8}{s.rejected:>10}{s.entered - s.rejected:>8}{ms:>9.2f}  {top}")
        lines.append(f"{'total':<12}{self.candidates:>8}{self.candidates - self.passed:>10}{self.passed:>8}"
                     f"{'':>9}  rejected {100 * self.rejection_rate:.2f}%"
                     + (f"; {self.too_slow} for the time limit (depends on the machine's load)"
                        if self.too_slow else ""))
        return "\n".join(lines)

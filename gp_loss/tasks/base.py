"""What the search needs from a task: proxy fitness, a final score and baselines.

A task trains its own model under a candidate genome (one loss per branch it
declares) and returns the metric it cares about. The evolution engine only
sees :class:`TrainOutcome`; tasks are built in each worker process from a
JSON-able spec (``make_task(name, options)``) so SCOOP and multiprocessing
workers construct them themselves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from gp_loss.language.genome import Genome


@dataclass
class TrainOutcome:
    """Metric after training (``score``, higher is better) and how training ended.

    ``status``: ``"ok"``; ``"non-finite"`` (the loss turned NaN/Inf and training
    stopped there); ``"error"`` (the loss raised); ``"too slow"`` (time limit).
    A failed training scores 0.
    """

    score: float
    status: str = "ok"
    reason: str = ""
    steps: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Task(Protocol):
    """A search task. ``branches``: the default branch name -> kind; ``kinds``: kinds it can train."""

    name: str
    metric: str
    branches: dict[str, str]
    kinds: tuple[str, ...]
    baselines: dict[str, dict[str, str]]

    def proxy_fitness(self, genome: Genome, seed: int, time_limit_s: float | None = None) -> TrainOutcome:
        """Validation metric after proxy training with ``genome``'s losses."""

    def final_score(self, genome: Genome, seed: int) -> TrainOutcome:
        """Test metric after the full training with ``genome``'s losses."""

"""What the search needs from a task: proxy fitness, a final score, and what it is.

A task trains its own model under a candidate genome (one loss per branch it
declares) and returns the metric it cares about. The evolution engine sees
:class:`TrainOutcome` and the task's :class:`TaskInfo` (from the registry,
:mod:`gp_loss.tasks.registry`); tasks are built in each worker process from a
JSON-able spec (``make_task(name, options, device)``), so SCOOP and
multiprocessing workers construct them themselves and the parent process never
loads a task's data unless it trains.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.paper_losses import PAPER_LOSSES


@dataclass
class TrainOutcome:
    """Metric after training (``score``, higher is better) and how training ended.

    ``status``: ``"ok"``; ``"non-finite"`` (a branch's loss turned NaN/Inf and
    training stopped there; ``reason`` names the branch); ``"error"`` (the loss
    raised); ``"too slow"`` (time limit). A failed training scores 0.
    ``losses``: each branch's loss value at the last step that ran (the
    terms by branch name, before they are summed).
    """

    score: float
    status: str = "ok"
    reason: str = ""
    steps: int = 0
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, without its data.

    Attributes:
        name: the task's name (``SearchConfig.task``, ``gp-loss evaluate --task``).
        summary: one line for help texts.
        options: its options dataclass (``from_dict(dict)``, ``check()``).
        task_class: built as ``task_class(options, device)`` where it trains.
        branches: the default genome layout, branch name -> kind.
        kinds: the kinds a branch of this task may have.
        metric: what the fitness measures (higher is better).
        baseline_losses: baseline name -> branch -> a loss of
            :data:`~gp_loss.paper_losses.PAPER_LOSSES` (the one table of paper losses).
    """

    name: str
    summary: str
    options: type
    task_class: type
    branches: dict[str, str]
    kinds: tuple[str, ...]
    metric: str
    baseline_losses: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def baselines(self) -> dict[str, dict[str, str]]:
        """Baseline name -> branch -> formula text."""
        return {name: {branch: PAPER_LOSSES[loss].formula for branch, loss in losses.items()}
                for name, losses in self.baseline_losses.items()}

    def make_options(self, options: dict | None = None):
        """The checked options object from a dict of option fields."""
        if options is not None and not isinstance(options, dict):
            raise GpLossError(f"{self.name} task options must be a mapping of option names to values, "
                              f"got {type(options).__name__}")
        opts = self.options.from_dict(dict(options or {}))
        opts.check()
        return opts


class Task(Protocol):
    """A search task, built by ``info.task_class(options, device)``."""

    info: TaskInfo
    device: torch.device

    def loss_terms(self, genome: Genome):
        """``terms(prediction, target) -> {branch name: scalar loss}``: the genome's losses by branch."""

    def proxy_fitness(self, genome: Genome, seed: int, time_limit_s: float | None = None) -> TrainOutcome:
        """Validation metric after proxy training with ``genome``'s losses."""

    def final_score(self, genome: Genome, seed: int) -> TrainOutcome:
        """Test metric after the full training with ``genome``'s losses."""

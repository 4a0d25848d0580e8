"""What a kind's convergence probe is: a sweep built from the settings, and its judge.

CSE-Autoloss (Liu et al., ICLR 2021) verifies that a loss converges: along sweeps
of the prediction towards its target the loss falls to a minimum at a correct
prediction (classification), or grows as boxes move away from their target
(regression). A sweep is one fixed batch of the kind's inputs whose rows are
all the sweep points; rows of ``cls``/``bcls``/``reg`` outputs are independent
(their operators work per sample), so row ``k`` of a candidate's output is its
loss at sweep point ``k``. The stage (:mod:`gp_loss.filters.convergence`)
evaluates candidates on the sweep and hands the judge their per-row losses.
Sweeps are float64, so that saturated losses stay distinguishable from their
neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

DTYPE = torch.float64

# A verdict: passed, its reason, and the numbers behind it.
Judgement = tuple[bool, str, dict[str, float]]


@dataclass(frozen=True)
class ConvergenceSettings:
    """The sweeps and tolerances of the convergence check.

    Classification (``cls``, ``bcls``):
        mono_rel_tol: a rise (or, past the minimum, a fall) of the loss between
            neighbouring sweep points smaller than this fraction of the loss's
            range along that sweep is numerical noise, not a violation.
        max_violation_frac: largest allowed fraction of sweep steps that go the
            wrong way (before the minimum: up; after it: down).
        grad_ratio_tol: for a loss still falling at the end of the sweep (its
            optimum at an infinite logit), |dL/dx| (finite differences) on the
            last step must be at most this fraction of its largest value.
        kink_ratio_tol: for a minimum inside the sweep (a finite optimum),
            |dL/dx| beside it must be at most this fraction of its value one
            logit away: the gradient vanishes there, no kink.
        target_tol: the minimum must be at a correct prediction: the
            probability of the target (softmax for ``cls``, sigmoid for
            ``bcls``, 1 - sigmoid for negatives) at least the soft target (``w``
            for positives, 1 otherwise) minus this, and for ``cls`` the true
            class on top; where a wrong class's logit falls, that class's
            probability at most this.
        logit_low, logit_high, grid: the sweep of the target logit (for ``bcls``
            negatives it runs from ``-logit_low`` down to ``-logit_high``).
        soft_targets: the values of ``w`` tried for positive samples.
        seed: draws the fixed other logits of the ``cls`` sweep.

    Regression (``reg``):
        reg_rel_tol: like ``mono_rel_tol``, relative to the loss's whole range.
        reg_max_violation_frac: largest allowed fraction of steps away from the
            target that lower the loss.
        max_spearman: the rank correlation between loss and IoU (per target box)
            must be at most this.
        reg_grid: distances per displacement trajectory.
    """

    mono_rel_tol: float = 1e-3
    max_violation_frac: float = 0.0
    grad_ratio_tol: float = 0.05
    kink_ratio_tol: float = 0.5
    target_tol: float = 0.25
    logit_low: float = -6.0
    logit_high: float = 8.0
    grid: int = 57
    soft_targets: tuple[float, ...] = (0.5, 1.0)
    seed: int = 0
    reg_rel_tol: float = 1e-3
    reg_max_violation_frac: float = 0.02
    max_spearman: float = -0.9
    reg_grid: int = 21


class Sweep(Protocol):
    """A sweep batch: the kind's ``inputs`` (N rows, one per sweep point) and the names of the
    inputs that change along it (a loss reading none of them is constant along every sweep)."""

    inputs: tuple[torch.Tensor, ...]
    varying: frozenset[str]


@dataclass(frozen=True)
class ConvergenceProbe:
    """A kind's convergence check.

    ``build(settings) -> sweep``; ``judge(sweep, losses, settings)`` gives one
    :data:`Judgement` per row of ``losses`` (M×N float64: M candidates' finite
    per-row losses on the sweep's N rows), exactly as judging each alone would.
    """

    build: Callable[[ConvergenceSettings], Sweep]
    judge: Callable[[Sweep, np.ndarray, ConvergenceSettings], list[Judgement]]

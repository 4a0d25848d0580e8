"""Candidate strategies: DYCORS, SRBF, EI and LCB, the four ablated in HPS-Det.

HPS-Det (Ji Liu, Dong Li, Zekun Li, Han Liu, Wenjing Ke, Lu Tian, Yi Shan;
AMD; "Dynamic Sample Assignment with Hyper-Parameter Search for Object
Detection") searches with pySOT's DYCORS and compares SRBF, EI and LCB.

* DYCORS (Regis & Shoemaker, 2013, "Combining radial basis function surrogates
  and dynamic coordinate search in high-dimensional expensive black-box
  optimization"), with pySOT's constants (Eriksson, Bindel & Shoemaker, 2019):
  100·d candidates around the best point, each coordinate perturbed with
  probability ``min(20/d, 1) * (1 - ln(n)/ln(budget))`` (never below 1/d; n
  counts the points proposed after the initial design, budget the evaluations
  left after it), by a truncated normal with sigma = radius·(upper − lower), at
  least 1. The radius starts at 0.2 (its maximum), doubles after 3 successes
  in a row, halves after max(d, 4) failures in a row, never below 0.2·0.5⁶; a
  success improves the best value by more than 1e-3·|best|. The next point
  minimises the merit ``w·s + (1 − w)·(1 − δ)``, s the surrogate's prediction
  and δ the distance to the evaluated and pending points, both rescaled to
  [0, 1] over the candidates; w cycles through 0.3, 0.5, 0.8, 0.95.
* SRBF (Regis & Shoemaker, 2007, "A stochastic radial basis function method
  for the global optimization of expensive functions"): the same with every
  coordinate perturbed.
* EI and LCB: expected improvement and the confidence bound mean + 2·std (for
  maximisation; pySOT's kappa), maximised over candidates (half local
  DYCORS-style, half uniform) instead of pySOT's genetic algorithm; pending
  points enter as fantasies at the predicted mean (kriging believer).

All values here are to be maximised. A strategy keeps only small state
(radius, counters): :meth:`Strategy.state` / :meth:`Strategy.load_state` carry
it through a checkpoint.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from gp_loss.errors import GpLossError
from gp_loss.hps.candidates import Point, fresh_candidates, min_distance, perturb, unit_rescale
from gp_loss.hps.space import Box
from gp_loss.hps.surrogate import GPSurrogate

WEIGHTS = (0.3, 0.5, 0.8, 0.95)
RADIUS_MAX = 0.2
RADIUS_MIN = 0.2 * 0.5**6
SUCCESS_TOL = 3
IMPROVEMENT = 1e-3
CANDIDATES_PER_DIM = 100
LCB_KAPPA = 2.0


@dataclass
class Context:
    """What a strategy sees when it proposes a point.

    ``x_seen`` ``(n, d)``: every evaluated point, failed ones included;
    ``values`` ``(n,)``: their values, NaN where the evaluation failed;
    ``x_pending`` ``(p, d)``: points being evaluated now; ``taken``: both, as
    tuples; ``surrogate``: fitted on the finite values, or ``None`` when there
    are none; ``n_adaptive``: points proposed after the initial design so far;
    ``adaptive_budget``: evaluations the budget leaves after the design.
    """

    box: Box
    rng: np.random.Generator
    x_seen: np.ndarray
    values: np.ndarray
    x_pending: np.ndarray
    taken: set[Point]
    surrogate: GPSurrogate | None
    n_adaptive: int
    adaptive_budget: int

    def best_point(self) -> np.ndarray | None:
        """The evaluated point with the highest finite value (the first of equals), or ``None``."""
        finite = np.isfinite(self.values)
        if not finite.any():
            return None
        index = np.flatnonzero(finite)[np.argmax(self.values[finite])]
        return self.x_seen[index]

    def occupied(self) -> np.ndarray:
        """Evaluated and pending points together, ``(n + p, d)``."""
        return np.vstack([self.x_seen, self.x_pending]) if len(self.x_pending) else self.x_seen


def perturbation_probability(box: Box, n_adaptive: int, adaptive_budget: int) -> float:
    """DYCORS's ``min(20/d, 1) * (1 - ln(n)/ln(budget))``, never below ``1/d`` (d: non-fixed dimensions)."""
    d = max(int(np.count_nonzero(box.upper > box.lower)), 1)
    floor = 1.0 / d
    n = n_adaptive + 1
    if adaptive_budget < 2:
        return floor
    prob = min(20.0 / d, 1.0) * (1.0 - math.log(n) / math.log(adaptive_budget))
    return max(prob, floor)


class Strategy(abc.ABC):
    """Proposes one new integer point at a time from a :class:`Context`."""

    name = ""

    @abc.abstractmethod
    def propose(self, ctx: Context) -> np.ndarray | None:
        """The next point ``(d,)`` (never evaluated nor pending), or ``None`` when the grid is exhausted."""

    def observe(self, value: float | None, best_before: float | None) -> None:
        """A proposed point came back with ``value`` (``None``: failed); ``best_before``: the best until then."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what :meth:`state` returned."""


class _RadiusStrategy(Strategy):
    """The part DYCORS and SRBF share: the adaptive radius, the cycling weight and the distance merit."""

    #: True: perturb each coordinate with DYCORS's probability; False: every coordinate (SRBF).
    dynamic = True

    def __init__(self, box: Box):
        self.box = box
        d = int(np.count_nonzero(box.upper > box.lower)) or 1
        self.fail_tol = max(d, 4)
        self.n_candidates = CANDIDATES_PER_DIM * box.dim
        self.radius = RADIUS_MAX
        # > 0: successes in a row; < 0: failures in a row (pySOT's "status").
        self.streak = 0
        self.weight_index = 0

    def state(self) -> dict:
        return {"radius": self.radius, "streak": self.streak, "weight_index": self.weight_index}

    def load_state(self, state: dict) -> None:
        self.radius = float(state["radius"])
        self.streak = int(state["streak"])
        self.weight_index = int(state["weight_index"])

    def observe(self, value: float | None, best_before: float | None) -> None:
        success = value is not None and (best_before is None
                                         or value > best_before + IMPROVEMENT * abs(best_before))
        self.streak = max(1, self.streak + 1) if success else min(-1, self.streak - 1)
        if self.streak >= SUCCESS_TOL:
            self.radius, self.streak = min(2.0 * self.radius, RADIUS_MAX), 0
        elif self.streak <= -self.fail_tol:
            self.radius, self.streak = max(0.5 * self.radius, RADIUS_MIN), 0

    def _generate(self, ctx: Context, center: np.ndarray) -> np.ndarray:
        prob = (perturbation_probability(ctx.box, ctx.n_adaptive, ctx.adaptive_budget)
                if self.dynamic else None)
        return perturb(ctx.box, ctx.rng, center, self.n_candidates, self.radius, prob)

    def propose(self, ctx: Context) -> np.ndarray | None:
        center = ctx.best_point()
        generated = (self._generate(ctx, center) if center is not None
                     else ctx.box.uniform(ctx.rng, self.n_candidates))
        candidates = fresh_candidates(ctx.box, ctx.rng, generated, ctx.taken, center)
        if len(candidates) == 0:
            return None
        weight = WEIGHTS[self.weight_index % len(WEIGHTS)]
        self.weight_index = (self.weight_index + 1) % len(WEIGHTS)
        distance = unit_rescale(min_distance(ctx.box, candidates, ctx.occupied()))
        if ctx.surrogate is None:
            merit = 1.0 - distance  # nothing to predict from: spread out
        else:
            mean, _ = ctx.surrogate.predict(candidates)
            # For maximisation a high prediction is good: 0 for the best candidate, 1 for the worst.
            score = 1.0 - unit_rescale(mean)
            merit = weight * score + (1.0 - weight) * (1.0 - distance)
        return candidates[int(np.argmin(merit))]


class DYCORS(_RadiusStrategy):
    """Dynamic coordinate search with a surrogate (Regis & Shoemaker, 2013), pySOT's constants."""

    name = "dycors"
    dynamic = True


class SRBF(_RadiusStrategy):
    """Stochastic RBF candidates: every coordinate perturbed (Regis & Shoemaker, 2007)."""

    name = "srbf"
    dynamic = False


class _AcquisitionStrategy(Strategy):
    """Maximise an acquisition of the GP's mean and std over candidates; pending points as fantasies."""

    def __init__(self, box: Box):
        self.box = box
        self.n_candidates = CANDIDATES_PER_DIM * box.dim

    @abc.abstractmethod
    def acquisition(self, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
        """The acquisition of each candidate (higher: proposed first)."""

    def propose(self, ctx: Context) -> np.ndarray | None:
        center = ctx.best_point()
        half = self.n_candidates // 2
        uniform = ctx.box.uniform(ctx.rng, self.n_candidates - half if center is not None else self.n_candidates)
        if center is not None:
            prob = perturbation_probability(ctx.box, ctx.n_adaptive, ctx.adaptive_budget)
            generated = np.vstack([perturb(ctx.box, ctx.rng, center, half, RADIUS_MAX, prob), uniform])
        else:
            generated = uniform
        candidates = fresh_candidates(ctx.box, ctx.rng, generated, ctx.taken, center)
        if len(candidates) == 0:
            return None
        if ctx.surrogate is None:
            return candidates[int(np.argmax(min_distance(ctx.box, candidates, ctx.occupied())))]
        surrogate = ctx.surrogate.with_fantasies(ctx.x_pending)
        mean, std = surrogate.predict(candidates)
        best = float(np.nanmax(ctx.values))
        return candidates[int(np.argmax(self.acquisition(mean, std, best)))]


class EI(_AcquisitionStrategy):
    """Expected improvement over the best value seen (for maximisation)."""

    name = "ei"

    def acquisition(self, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
        std = np.maximum(std, 1e-12)
        z = (mean - best) / std
        return std * (z * norm.cdf(z) + norm.pdf(z))


class LCB(_AcquisitionStrategy):
    """The confidence bound ``mean + kappa * std`` (pySOT's LCB with kappa 2, for maximisation)."""

    name = "lcb"

    def acquisition(self, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
        return mean + LCB_KAPPA * std


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (DYCORS, SRBF, EI, LCB)}


def make_strategy(name: str, box: Box) -> Strategy:
    """The strategy called ``name`` (dycors, srbf, ei, lcb) for ``box``."""
    if name not in STRATEGIES:
        raise GpLossError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](box)

"""Integer benchmark functions for the HPS optimiser (to be maximised): ``gp-loss bench hps`` and its tests.

Ackley, Levy and Rastrigin (the usual definitions and domains of Surjanovic &
Bingham's Virtual Library of Simulation Experiments: [-32.768, 32.768],
[-10, 10] and [-5.12, 5.12]), negated so that higher is better, each on an
integer grid ``0..U`` per dimension mapped linearly onto the domain: U = 32, 25
and 80, the upper bounds HPS-Det uses for ATSS, FCOS and RetinaNet. The
"-small" variants use narrower domains (Ackley and Levy [-5, 5], Rastrigin
[-3, 3]) on which random search's medians come near the reference's random-search
medians (:data:`gp_loss.bench.hps.REFERENCE`: a plain DYCORS, TPE and random search
on the full-domain functions), so a gain over random search can be set against the
reference's. And an "AP-like" function of the kind HPS-Det's search sees: smooth in log k, with a
few dimensions that matter and many that hardly do, a mild interaction, and
evaluation noise.

Problems are instances of top-level classes, so they pickle into worker
processes; the AP-like noise is a hash of the point and the problem's seed, so
every process (and every rerun) sees the same value at the same point.
"""
from __future__ import annotations

import abc
import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridProblem(abc.ABC):
    """A function of reals, evaluated on the integer grid ``0..upper`` mapped onto ``[low, high]``."""

    name: str
    dim: int
    upper: int
    low: float
    high: float

    @property
    def bounds(self) -> tuple[list[int], list[int]]:
        """``(lower, upper)`` lists for :func:`gp_loss.hps.maximize`."""
        return [0] * self.dim, [self.upper] * self.dim

    def to_real(self, x) -> np.ndarray:
        return self.low + (self.high - self.low) * np.asarray(x, dtype=float) / self.upper

    @abc.abstractmethod
    def minimum_value(self, z: np.ndarray) -> float:
        """The function to minimise at the real point ``z``."""

    def __call__(self, x: list[int]) -> float:
        return -float(self.minimum_value(self.to_real(x)))


class Ackley(GridProblem):
    """Negated Ackley; optimum 0 at the centre of the grid."""

    def __init__(self, dim: int = 15, upper: int = 32, low: float = -32.768, high: float = 32.768,
                 name: str = "ackley"):
        super().__init__(name, dim, upper, low, high)

    def minimum_value(self, z: np.ndarray) -> float:
        return (-20.0 * math.exp(-0.2 * math.sqrt(float(np.mean(z**2))))
                - math.exp(float(np.mean(np.cos(2 * math.pi * z)))) + 20.0 + math.e)


class Levy(GridProblem):
    """Negated Levy; optimum 0 at z = 1 (just off the grid: its best grid point is near, not at, 0)."""

    def __init__(self, dim: int = 15, upper: int = 25, low: float = -10.0, high: float = 10.0,
                 name: str = "levy"):
        super().__init__(name, dim, upper, low, high)

    def minimum_value(self, z: np.ndarray) -> float:
        w = 1.0 + (z - 1.0) / 4.0
        head = math.sin(math.pi * w[0]) ** 2
        body = float(np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)))
        tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
        return head + body + tail


class Rastrigin(GridProblem):
    """Negated Rastrigin; optimum 0 at the centre of the grid."""

    def __init__(self, dim: int = 15, upper: int = 80, low: float = -5.12, high: float = 5.12,
                 name: str = "rastrigin"):
        super().__init__(name, dim, upper, low, high)

    def minimum_value(self, z: np.ndarray) -> float:
        return 10.0 * z.size + float(np.sum(z**2 - 10 * np.cos(2 * math.pi * z)))


class APLike:
    """A smooth, noisy "AP" of integer counts ``k`` in ``1..upper``: what a detector's search sees.

    ``AP = 40 - sum_i a_i (log k_i - log k*_i)^2 - c (mean_i (log k_i - log k*_i))^2 + noise``:
    the optima ``k*`` and weights ``a`` (a few large, most small) are drawn
    from ``seed``; the noise (std ``noise``) is a hash of the point, so it is
    the same at the same point in any process.
    """

    name = "ap-like"

    def __init__(self, dim: int = 15, upper: int = 80, noise: float = 0.1, seed: int = 0):
        self.dim, self.upper, self.noise, self.seed = dim, upper, noise, seed
        rng = np.random.default_rng(seed)
        self.log_opt = np.log(rng.integers(2, max(upper // 3, 3), size=dim, endpoint=True))
        # Three dimensions matter a lot, the rest a little: like positives per FPN level x shape bin.
        self.weights = np.where(np.arange(dim) < 3, 1.5, 0.15)[rng.permutation(dim)]
        self.coupling = 2.0

    @property
    def bounds(self) -> tuple[list[int], list[int]]:
        return [1] * self.dim, [self.upper] * self.dim

    def _noise(self, x: list[int]) -> float:
        digest = hashlib.sha256(f"{self.seed}:{','.join(map(str, x))}".encode()).digest()
        u1, u2 = (int.from_bytes(digest[i:i + 8], "big") / 2**64 for i in (0, 8))
        return self.noise * math.sqrt(-2 * math.log(max(u1, 1e-300))) * math.cos(2 * math.pi * u2)

    def __call__(self, x: list[int]) -> float:
        gap = np.log(np.asarray(x, dtype=float)) - self.log_opt
        return float(40.0 - np.sum(self.weights * gap**2) - self.coupling * np.mean(gap) ** 2 + self._noise(x))


class Slow:
    """``problem`` with a fixed cost: sleeps ``seconds`` per evaluation (the parallel check)."""

    def __init__(self, problem, seconds: float):
        self.problem, self.seconds = problem, seconds
        self.name = getattr(problem, "name", "slow")
        self.bounds = problem.bounds

    def __call__(self, x: list[int]) -> float:
        time.sleep(self.seconds)
        return self.problem(x)


def _ackley_small(dim: int) -> Ackley:
    return Ackley(dim, 25, -5.0, 5.0, "ackley-small")


def _levy_small(dim: int) -> Levy:
    return Levy(dim, 32, -5.0, 5.0, "levy-small")


def _rastrigin_small(dim: int) -> Rastrigin:
    return Rastrigin(dim, 80, -3.0, 3.0, "rastrigin-small")


# name -> factory of dim. The first four are the benchmark's default set.
PROBLEMS = {"ackley": Ackley, "levy": Levy, "rastrigin": Rastrigin, "ap-like": APLike,
            "ackley-small": _ackley_small, "levy-small": _levy_small, "rastrigin-small": _rastrigin_small}
DEFAULT_PROBLEMS = ("ackley", "levy", "rastrigin", "ap-like")


def problem_named(name: str, dim: int = 15):
    """The problem called ``name`` (a key of :data:`PROBLEMS`) in ``dim`` dimensions."""
    return PROBLEMS[name](dim)

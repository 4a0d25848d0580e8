"""The surrogate loop of HPS-Det: ``maximize(objective, lower, upper, budget=..., seed=...)``.

HPS-Det (Ji Liu et al., AMD, "Dynamic Sample Assignment with Hyper-Parameter
Search for Object Detection"), Algorithm 1: evaluate an initial design, then
repeatedly fit the surrogate to every finite value so far, propose a point
with the candidate strategy and evaluate it, until the budget is spent. As in
pySOT and POAP (Eriksson, Bindel & Shoemaker, 2019) evaluations run
asynchronously: whenever a worker is free a point is proposed, the points in
flight counting as taken (the distance merit, the duplicate filter), and
results are accepted in the order they finish.

Serial runs (one worker) are a pure function of the seed, and a run with a
``run_dir`` saves a checkpoint after each result (history, pending points,
random generator state, strategy state), so an interrupted serial run resumed
with ``resume=True`` proposes exactly the points the uninterrupted run would
have. With several workers the order of results depends on timing; a resumed
parallel run re-submits the points that were in flight and goes on.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gp_loss.errors import GpLossError
from gp_loss.hps.candidates import Point
from gp_loss.hps.design import check_size, default_size, symmetric_latin_hypercube
from gp_loss.hps.evaluation import evaluate
from gp_loss.hps.space import Box, check_seed
from gp_loss.hps.strategies import Context, Strategy, make_strategy
from gp_loss.hps.surrogate import GPSurrogate
from gp_loss.runtime.checkpoint import open_run, save_checkpoint
from gp_loss.runtime.backend import Backend
from gp_loss.runtime.parallel import backend_for_job

CHECKPOINT_VERSION = 1


@dataclass
class Result:
    """What :func:`maximize` found.

    ``history``: ``(x, value)`` per evaluation in the order results arrived,
    ``value`` ``None`` for a failed one, whose reason is ``errors[index]``.
    ``best_x`` / ``best_value``: the best finite evaluation (the first of
    equals); ``None`` only if every evaluation failed. ``stopped``: ``budget``,
    ``time`` (``max_seconds``) or ``exhausted`` (every grid point evaluated).
    ``times``: wall seconds from the start (across resumes) at which each
    result of ``history`` arrived. ``propose_seconds``: ``(points evaluated,
    seconds)`` for each proposal after the design: the optimiser's own time
    (surrogate fit, candidates, merit), the objective excluded.
    """

    best_x: list[int] | None
    best_value: float | None
    history: list[tuple[list[int], float | None]]
    errors: dict[int, str] = field(default_factory=dict)
    stopped: str = "budget"
    seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    propose_seconds: list[tuple[int, float]] = field(default_factory=list)

    def best_after(self, n: int) -> float | None:
        """The best finite value among the first ``n`` evaluations."""
        values = [v for _, v in self.history[:n] if v is not None]
        return max(values) if values else None

    def seconds_to_reach(self, target: float) -> float | None:
        """Wall seconds until a value of at least ``target`` arrived, or ``None`` if none did."""
        for (_, value), t in zip(self.history, self.times):
            if value is not None and value >= target:
                return t
        return None


class _Run:
    """The mutable state of one run, and its checkpoint form."""

    def __init__(self, box: Box, seed: int, strategy: Strategy, budget: int, n_init: int,
                 initial: list[list[int]] | None = None):
        self.box, self.seed, self.strategy = box, seed, strategy
        self.budget, self.n_init = budget, n_init
        self.initial = [list(x) for x in initial or []]
        self.rng = np.random.Generator(np.random.PCG64(seed))
        # The given points go first, then the Latin hypercube: both are "design" points (no strategy
        # feedback), and the hypercube is drawn from the seed alone, whatever points were given.
        design = symmetric_latin_hypercube(box, n_init, self.rng)
        self.design = (np.vstack([np.array(self.initial, dtype=np.int64), design]) if self.initial
                       else design)
        self.next_design = 0
        self.n_adaptive = 0  # points proposed after the design (evaluated or pending)
        self.records: list[dict] = []  # {"x", "value", "error", "design", "t"} in arrival order
        self.pending: list[dict] = []  # {"x", "design"} in submission order
        self.elapsed = 0.0
        self.propose_seconds: list[tuple[int, float]] = []
        self._fit_key: int | None = None
        self._surrogate: GPSurrogate | None = None

    # -- checkpoint ---------------------------------------------------------
    def signature(self) -> dict:
        sig = {"lower": self.box.lower.tolist(), "upper": self.box.upper.tolist(), "seed": self.seed,
               "strategy": self.strategy.name, "n_init": self.n_init}
        if self.initial:  # only then: a checkpoint of a run without given points keeps its signature
            sig["initial"] = self.initial
        return sig

    def to_state(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "signature": self.signature(), "budget": self.budget,
                "rng": self.rng.bit_generator.state, "strategy_state": self.strategy.state(),
                "design": self.design.tolist(), "next_design": self.next_design,
                "n_adaptive": self.n_adaptive, "records": self.records, "pending": self.pending,
                "elapsed": self.elapsed, "propose_seconds": [list(p) for p in self.propose_seconds]}

    def load_state(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        # A run without given points stores none: compare as the empty list, whichever side lacks them.
        theirs, ours = {"initial": [], **state["signature"]}, {**self.signature(), "initial": self.initial}
        for key in ours:
            if key not in theirs:
                raise KeyError(f"signature.{key}")
        differ = [f"{k} {theirs.get(k)!r} (now {ours[k]!r})" for k in ours if theirs.get(k) != ours[k]]
        if differ:
            raise GpLossError("the checkpoint is of a run with other settings: " + ", ".join(differ)
                              + "; resume with the same settings or use another run directory")
        self.rng.bit_generator.state = state["rng"]
        self.strategy.load_state(state["strategy_state"])
        self.design = np.array(state["design"], dtype=np.int64).reshape(len(self.initial) + self.n_init,
                                                                        self.box.dim)
        self.next_design = int(state["next_design"])
        self.n_adaptive = int(state["n_adaptive"])
        self.records = [{"x": [int(v) for v in r["x"]],
                         "value": None if r["value"] is None else float(r["value"]),
                         "error": None if r["error"] is None else str(r["error"]),
                         "design": bool(r["design"]), "t": float(r["t"])} for r in state["records"]]
        self.pending = [{"x": [int(v) for v in p["x"]], "design": bool(p["design"])} for p in state["pending"]]
        self.elapsed = float(state["elapsed"])
        self.propose_seconds = [(int(n), float(s)) for n, s in state["propose_seconds"]]
        for r in self.records + self.pending:
            if len(r["x"]) != self.box.dim:
                raise ValueError(f"a point of {len(r['x'])} coordinates, expected {self.box.dim}")

    # -- the loop's pieces --------------------------------------------------
    def taken(self) -> set[Point]:
        return {tuple(r["x"]) for r in self.records} | {tuple(p["x"]) for p in self.pending}

    def best(self) -> tuple[list[int] | None, float | None]:
        best_x, best_value = None, None
        for r in self.records:
            if r["value"] is not None and (best_value is None or r["value"] > best_value):
                best_x, best_value = r["x"], r["value"]
        return best_x, best_value

    def surrogate(self, x_seen: np.ndarray, values: np.ndarray) -> GPSurrogate | None:
        """The GP fitted on the finite values; refitted only when results arrived since the last fit."""
        finite = np.isfinite(values)
        if not finite.any():
            return None
        if self._fit_key != len(self.records):
            # The restarts' seed depends on the run's seed and the data size only: a resumed run refits alike.
            random_state = (self.seed * 1_000_003 + len(self.records)) % 2**32
            self._surrogate = GPSurrogate(self.box).fit(x_seen[finite], values[finite], random_state)
            self._fit_key = len(self.records)
        return self._surrogate

    def propose(self) -> dict | None:
        """The next point to submit, ``{"x", "design"}``, or ``None`` if the grid is exhausted."""
        taken = self.taken()
        while self.next_design < len(self.design):
            x = self.design[self.next_design]
            self.next_design += 1
            if tuple(int(v) for v in x) not in taken:  # after a resume, or a given point the hypercube repeats
                return {"x": [int(v) for v in x], "design": True}
        start = time.perf_counter()
        x = self._propose_adaptive(taken)
        if x is None:
            return None
        self.n_adaptive += 1
        self.propose_seconds.append((len(self.records), time.perf_counter() - start))
        return {"x": [int(v) for v in x], "design": False}

    def _propose_adaptive(self, taken: set[Point]) -> np.ndarray | None:
        dim = self.box.dim
        x_seen = np.array([r["x"] for r in self.records], dtype=np.int64).reshape(-1, dim)
        values = np.array([np.nan if r["value"] is None else r["value"] for r in self.records])
        ctx = Context(box=self.box, rng=self.rng, x_seen=x_seen, values=values,
                      x_pending=np.array([p["x"] for p in self.pending], dtype=np.int64).reshape(-1, dim),
                      taken=taken, surrogate=self.surrogate(x_seen, values), n_adaptive=self.n_adaptive,
                      adaptive_budget=self.budget - self.n_init - len(self.initial))
        return self.strategy.propose(ctx)

    def record(self, item: dict, value: float | None, error: str | None, t: float) -> None:
        """Accept a result that arrived ``t`` wall seconds into the run."""
        if not item["design"]:
            self.strategy.observe(value, self.best()[1])
        self.records.append({"x": item["x"], "value": value, "error": error, "design": item["design"], "t": t})

    def result(self, stopped: str) -> Result:
        best_x, best_value = self.best()
        return Result(best_x=None if best_x is None else list(best_x), best_value=best_value,
                      history=[(list(r["x"]), r["value"]) for r in self.records],
                      errors={i: r["error"] for i, r in enumerate(self.records) if r["error"] is not None},
                      stopped=stopped, seconds=self.elapsed, times=[r["t"] for r in self.records],
                      propose_seconds=list(self.propose_seconds))


def _check_count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GpLossError(f"{what} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def _check_initial(initial, box: Box) -> list[list[int]]:
    """The ``initial`` points as lists of ints: each of ``box.dim`` integers inside the box, no two equal."""
    if initial is None:
        return []
    if isinstance(initial, (str, bytes)) or not hasattr(initial, "__iter__"):
        raise GpLossError(f"initial must be a list of points (lists of {box.dim} integers), got {initial!r}")
    points: list[list[int]] = []
    for i, x in enumerate(initial):
        if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or len(x) != box.dim:
            raise GpLossError(f"initial[{i}] must be a point of {box.dim} integers, got {x!r}")
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in x):
            raise GpLossError(f"initial[{i}] must be a point of {box.dim} integers, got {x!r}")
        point = [int(v) for v in x]
        outside = [j for j, v in enumerate(point) if not box.lower[j] <= v <= box.upper[j]]
        if outside:
            j = outside[0]
            raise GpLossError(f"initial[{i}][{j}] = {point[j]} is outside the bounds "
                              f"[{int(box.lower[j])}, {int(box.upper[j])}]")
        if point in points:
            raise GpLossError(f"initial[{i}] repeats initial[{points.index(point)}]: give each point once")
        points.append(point)
    return points


def maximize(objective: Callable[[list[int]], float], lower, upper, *, budget: int, seed: int,
             strategy: str = "dycors", n_init: int | None = None, initial: list[list[int]] | None = None,
             map: Backend | None = None,
             workers: int = 1, max_seconds: float | None = None, run_dir: str | os.PathLike | None = None,
             resume: bool = False, progress: Callable[[dict], None] | None = None) -> Result:
    """Maximise ``objective(list of int) -> float`` over the integers ``lower[i] <= x[i] <= upper[i]``.

    ``budget``: evaluations in all, the ``n_init`` points of the initial design
    (default 2(d+1), a symmetric Latin hypercube) included; ``max_seconds``
    also stops it after that wall time (points in flight are awaited).
    ``initial``: points evaluated before the design, in this order (e.g. the
    current setting, so that the best found is never worse than it); they count
    in the budget, and a design point equal to one of them is not evaluated twice.
    ``strategy``: ``dycors`` (default), ``srbf``, ``ei`` or ``lcb``.
    ``map``: a :class:`~gp_loss.runtime.backend.Backend` whose workers evaluate
    points asynchronously (``workers`` > 1 without one starts a
    multiprocessing one; the objective must then pickle). ``run_dir``: save a
    checkpoint there after each result; ``resume=True`` continues the run
    saved there (same bounds, seed, strategy, n_init and initial; a larger ``budget``
    extends it; ``max_seconds`` counts the time of every session). Never
    evaluates a point twice; stops early when every grid point has been
    evaluated. ``progress``: called with ``{"done", "budget"}`` when the loop starts (results so far,
    resumed ones included), then after each result with its ``x``, ``value``, ``error``, ``best_x``,
    ``best_value`` and ``seconds`` (wall time since the start) too. Bad input raises :class:`GpLossError`.
    """
    box = Box.from_bounds(lower, upper)
    seed = check_seed(seed)
    budget = _check_count(budget, "budget", 1)
    workers = _check_count(workers, "workers", 1)
    if n_init is None:
        n_init = default_size(box)
    n_init = _check_count(n_init, "n_init", 1)
    check_size(box, n_init)
    given = _check_initial(initial, box)
    if budget < len(given) + n_init:
        raise GpLossError(f"budget = {budget} is smaller than the initial design of n_init = {n_init} points"
                          + (f" after the {len(given)} initial point(s)" if given else ""))
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0
                                        and math.isfinite(max_seconds)):
        raise GpLossError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    if not callable(objective):
        raise GpLossError(f"objective must be callable, got {type(objective).__name__}")
    chosen = make_strategy(strategy, box)
    run = _Run(box, seed, chosen, budget, n_init, given)
    path = None if run_dir is None else Path(run_dir)
    open_run(run.load_state, path, resume)

    with backend_for_job(map, workers, objective) as mapper:
        stopped = _loop(run, objective, mapper, max_seconds, path, progress)
    return run.result(stopped)


def _loop(run: _Run, objective, mapper: Backend, max_seconds: float | None, run_dir: Path | None,
          progress: Callable[[dict], None] | None = None) -> str:
    """Keep every worker busy until the budget, the time or the grid runs out; returns why it stopped."""
    started = time.perf_counter() - run.elapsed
    if progress is not None:
        progress({"done": len(run.records), "budget": run.budget})
    in_flight: dict = {}  # future -> pending item
    # Points in flight when the checkpoint was written go first (parallel resume).
    queued, run.pending = list(run.pending), []
    stopped = "budget"

    def submit(item: dict) -> None:
        run.pending.append(item)
        in_flight[mapper.submit(evaluate, objective, item["x"])] = item

    while True:
        while stopped == "budget" and len(in_flight) < mapper.workers \
                and len(run.records) + len(run.pending) < run.budget:
            if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                stopped = "time"
                break
            item = queued.pop(0) if queued else run.propose()
            if item is None:
                stopped = "exhausted"
                break
            submit(item)
        if not in_flight:
            break
        done, _ = mapper.wait_first(in_flight)
        # Several can finish together: take them in submission order, so the record does not
        # depend on the order of a set.
        for future in sorted(done, key=lambda f: run.pending.index(in_flight[f])):
            item = in_flight.pop(future)
            try:
                value, error = future.result()
            except Exception as err:  # the worker itself failed (e.g. it died): a failed point all the same
                value, error = None, f"{type(err).__name__}: {err}"
            run.pending.remove(item)
            run.record(item, value, error, time.perf_counter() - started)
            if progress is not None:
                best_x, best_value = run.best()
                progress({"done": len(run.records), "budget": run.budget, "x": item["x"], "value": value,
                          "error": error, "best_x": best_x, "best_value": best_value,
                          "seconds": run.records[-1]["t"]})
        run.elapsed = time.perf_counter() - started
        if run_dir is not None:
            save_checkpoint(run_dir, run.to_state())
    run.elapsed = time.perf_counter() - started
    return stopped

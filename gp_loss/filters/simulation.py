"""Model optimisation simulation: the last and most expensive filter stage.

CSE-Autoloss (Liu et al., ICLR 2021, "Model Optimization Simulation") trains
briefly with each surviving candidate on as many images as there are classes and
keeps the candidate only if the task metric improves. This stage does the same
for each kind of branch, on its spec's tiny problem
(:mod:`gp_loss.probes.simulation`), small enough to take a fraction of a second
on a CPU.

A candidate is rejected if its loss (or gradient) becomes NaN/Inf, at the
first such step; if the metric after training is not above both the untrained
model's and chance (the best constant prediction's, so that a loss collapsing
the model to one class cannot pass); if it runs out of time (checked between
steps); or if anything in it raises. Training is deterministic: data and
initialisation come from ``seed`` under a forked RNG, and the model is trained
on one CPU thread by default.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch

from primitives import KINDS

from gp_loss.filters.base import Candidate, StageResult, rejection_reason
from gp_loss.kinds import kind_spec
from gp_loss.probes.simulation import SimulationProblem
from gp_loss.runtime.threads import torch_threads
from gp_loss.timeout import TOO_SLOW

_TOLERANCE = 1e-6


class SimulationStage:
    """Train a tiny model briefly with the candidate loss; keep it if the metric improves.

    Args:
        steps: Adam steps of the simulation (a few dozen); an int for every
            kind, a dict per kind name, or ``None`` for each kind's
            :attr:`~gp_loss.kinds.KindSpec.simulation_steps`.
        lr: Adam learning rate; a float for every kind, a dict per kind name,
            or ``None`` for each kind's :attr:`~gp_loss.kinds.KindSpec.simulation_lr`.
        seed: picks the images, weights, boxes and the model initialisation.
        time_limit: seconds of CPU time (this thread's, see :mod:`gp_loss.timeout`) a candidate
            may take before it is rejected.
        min_gain: the metric must exceed both the untrained model's and chance
            (the best constant prediction's) by more than this.
        device: where the simulation runs.
        num_threads: torch CPU threads while a candidate trains (restored
            afterwards); ``None`` leaves torch's setting alone. One thread is
            the default because these tensors are tiny: extra threads only
            spin, and under load (parallel search workers) made the
            simulation many times slower. It also makes the numbers
            independent of the machine's core count.

    ``numbers`` of the result: ``metric_before``, ``metric_chance``,
    ``metric_after`` (when training finished), ``final_loss``, ``steps_run``;
    ``nan_step`` on a NaN/Inf rejection.
    """

    name = "simulation"

    def __init__(self, steps: int | dict[str, int] | None = None,
                 lr: float | dict[str, float] | None = None, seed: int = 0,
                 time_limit: float = 30.0, min_gain: float = 0.0,
                 device: str | torch.device = "cpu", num_threads: int | None = 1):
        self.steps = _per_kind(steps, {k: kind_spec(k).simulation_steps for k in KINDS}, int)
        self.lr = _per_kind(lr, {k: kind_spec(k).simulation_lr for k in KINDS}, float)
        self.seed, self.time_limit, self.min_gain, self.device = seed, time_limit, min_gain, device
        self.num_threads = num_threads
        # Built lazily per kind and reused: the data, the untrained model and its metric.
        self._problems: dict[str, tuple[SimulationProblem, float]] = {}

    def problem(self, kind_name: str) -> tuple[SimulationProblem, float]:
        """The kind's problem and its untrained metric (built once)."""
        if kind_name not in self._problems:
            # Seed the model initialisation without touching the caller's RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                p = kind_spec(kind_name).simulation_problem(self.seed, self.device)
            with torch.no_grad():
                before = p.metric(p.model)
            self._problems[kind_name] = (p, before)
        return self._problems[kind_name]

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s problem and its untrained metric."""
        self.problem(kind_name)

    def __call__(self, candidate: Candidate) -> StageResult:
        with torch_threads(self.num_threads):
            return self._simulate(candidate)

    def _simulate(self, candidate: Candidate) -> StageResult:
        start, cpu_start = time.perf_counter(), time.thread_time()
        numbers: dict[str, float] = {}

        def result(passed: bool, reason: str, timed_out: bool = False) -> StageResult:
            return StageResult(self.name, passed, reason, dict(numbers), time.perf_counter() - start,
                               timed_out=timed_out)

        try:
            kind = candidate.kind.name
            problem, before = self.problem(kind)
            numbers.update(metric_before=before, metric_chance=problem.chance)
            steps = self.steps[kind]
            model = copy.deepcopy(problem.model)
            params = list(model.parameters())
            opt = torch.optim.Adam(params, lr=self.lr[kind])
            for step in range(steps + 1):  # the last pass only checks the trained model's loss
                numbers["steps_run"] = step
                if time.thread_time() - cpu_start > self.time_limit:
                    return result(False, f"{TOO_SLOW}: over its time limit of {self.time_limit:g} s of CPU time "
                                         f"at step {step}", timed_out=True)
                loss = candidate.loss(*problem.inputs(model))
                if loss.dim() != 0:
                    return result(False, f"output is not a scalar (shape {tuple(loss.shape)})")
                if not torch.isfinite(loss):
                    numbers["nan_step"] = step
                    return result(False, f"loss is {loss.item()} at step {step}")
                numbers["final_loss"] = loss.item()
                if step == steps:
                    break
                if not loss.requires_grad:
                    return result(False, "loss does not depend on the prediction")
                opt.zero_grad()
                loss.backward()
                # A NaN gradient would silently poison the weights: stop here instead.
                if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
                    numbers["nan_step"] = step
                    return result(False, f"gradient is not finite at step {step}")
                opt.step()
            with torch.no_grad():
                after = problem.metric(model)
            numbers["metric_after"] = after
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, rejection_reason(err))
        # The tolerance keeps float noise (e.g. float32 0.1 vs 1/10) from counting as a gain.
        bar = max(before, problem.chance) + self.min_gain + _TOLERANCE
        if after > bar:
            return result(True, f"metric improved {before:.3f} -> {after:.3f} (chance {problem.chance:.3f})")
        return result(False, f"metric did not improve: {before:.3f} -> {after:.3f} "
                             f"(chance {problem.chance:.3f})")


def _per_kind(value, defaults: dict, cast: Callable) -> dict:
    """Expand a per-kind setting: one value for every kind, a partial dict, or ``None``."""
    table = dict(defaults)
    if isinstance(value, dict):
        table.update({k: cast(v) for k, v in value.items()})
    elif value is not None:
        table = {k: cast(value) for k in defaults}
    return table

"""The staged filter pipeline: cheapest stage first, stop at the first rejection.

Default order (seed 000 and 002):

1. ``validity``: finite loss and gradient, depends on prediction and target;
2. ``convergence``: CSE-Autoloss convergence-property verification;
3. ``rejection``: AutoLoss-Zero loss-rejection protocol (Eq. 3);
4. ``equivalence``: gradient-equivalence signature (never rejects; marks cache hits);
5. ``simulation``: CSE-Autoloss model-optimisation simulation (optional, costly).

Stages are ordered by cost × how often they reject, so most candidates leave
after a millisecond. Each stage of each candidate runs under a time limit; an
exception, NaN, Inf or overrun is a rejection with its reason.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from deap import gp

from primitives import Kind

from gp_loss.filters.base import Candidate, Stage, StageResult
from gp_loss.filters.funnel import Funnel
from gp_loss.timeout import TimeLimitExceeded, time_limit


@dataclass
class Verdict:
    """All stage results of one candidate; ``passed`` if none rejected."""

    candidate: Candidate
    results: list[StageResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def rejection(self) -> StageResult | None:
        return next((r for r in self.results if not r.passed), None)

    def to_dict(self) -> dict:
        return {"formula": self.candidate.formula, "kind": self.candidate.kind.name,
                "passed": self.passed, "stages": [r.to_dict() for r in self.results]}


def default_stages(simulate: bool = False, seed: int = 0) -> list[Stage]:
    """The stages of the module docstring, with their documented defaults."""
    from gp_loss.filters.convergence import ConvergenceStage
    from gp_loss.filters.equivalence import EquivalenceStage
    from gp_loss.filters.rejection import RejectionStage
    from gp_loss.filters.validity import ValidityStage

    stages: list[Stage] = [ValidityStage(seed=seed), ConvergenceStage(), RejectionStage(seed=seed),
                           EquivalenceStage()]
    if simulate:
        from gp_loss.filters.simulation import SimulationStage
        stages.append(SimulationStage(seed=seed))
    return stages


class FilterPipeline:
    """Run candidates through ``stages`` with a per-stage time limit and a funnel."""

    def __init__(self, stages: list[Stage], time_limit_s: float | None = 10.0, num_threads: int | None = 1,
                 memo_size: int = 0):
        # Tiny tensors: torch's intra-op threads cost more than they save, and on a
        # busy machine a waiting thread makes a 5 ms stage take 50-100 ms.
        self.num_threads = num_threads
        self.stages = list(stages)
        self.time_limit_s = time_limit_s
        self.funnel = Funnel([s.name for s in self.stages])
        # Verdicts by formula: random trees repeat (about a third of random depth-3 `cls`
        # trees are repeats), and the stages are deterministic, so a repeat replays its
        # verdict instead of running again. Overruns are not remembered.
        self.memo_size = memo_size
        self._memo: dict[tuple[str, str], list[StageResult]] = {}

    def _run_stage(self, stage: Stage, candidate: Candidate) -> StageResult:
        start = time.perf_counter()
        try:
            with time_limit(self.time_limit_s):
                result = stage(candidate)
        except TimeLimitExceeded as err:
            result = StageResult(stage.name, False, f"too slow: {err}")
        except Exception as err:  # a stage must not stop the run for one candidate
            result = StageResult(stage.name, False, f"{type(err).__name__}: {err}")
        result.seconds = time.perf_counter() - start
        return result

    def run(self, candidate: Candidate) -> Verdict:
        """All stages until the first rejection; records the funnel."""
        previous = torch.get_num_threads()
        if self.num_threads and previous != self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            return self._run(candidate)
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def _run(self, candidate: Candidate) -> Verdict:
        verdict = Verdict(candidate)
        self.funnel.candidates += 1
        for stage in self.stages:
            result = self._run_stage(stage, candidate)
            verdict.results.append(result)
            self.funnel.record(result)
            if not result.passed:
                return verdict
        self.funnel.passed += 1
        return verdict

    def check(self, kind: Kind, tree: gp.PrimitiveTree) -> Verdict:
        """Compile ``tree`` and run it through the stages (a compile error is a rejection)."""
        try:
            candidate = Candidate(kind, tree)
        except Exception as err:  # pragma: no cover - parsed trees always compile
            self.funnel.candidates += 1
            result = StageResult("compile", False, f"{type(err).__name__}: {err}")
            self.funnel.record(result)
            return Verdict(Candidate.__new__(Candidate), [result])
        if not self.memo_size:
            return self.run(candidate)
        key = (kind.name, candidate.formula)
        if key in self._memo:
            return self._replay(candidate, self._memo[key])
        verdict = self.run(candidate)
        if not any(r.reason.startswith("too slow") for r in verdict.results):
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[key] = verdict.results
        return verdict

    def _replay(self, candidate: Candidate, results: list[StageResult]) -> Verdict:
        verdict = Verdict(candidate, [StageResult(r.stage, r.passed, r.reason, dict(r.numbers), 0.0)
                                      for r in results])
        self.funnel.candidates += 1
        for r in verdict.results:
            self.funnel.record(r)
        if verdict.passed:
            self.funnel.passed += 1
        return verdict

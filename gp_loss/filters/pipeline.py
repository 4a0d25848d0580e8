"""The staged filter pipeline: cheapest stage first, stop at the first rejection.

Default order (seed 000 and 002):

1. ``convergence``: CSE-Autoloss convergence-property verification;
2. ``validity``: finite loss and gradient, depends on prediction and target;
3. ``rejection``: AutoLoss-Zero loss-rejection protocol (Eq. 3);
4. ``equivalence``: gradient-equivalence signature (never rejects; marks cache hits);
5. ``simulation``: CSE-Autoloss model-optimisation simulation (optional, costly).

A candidate passes only if every stage passes it, so the order decides the
cost, not the verdict. Stage A goes before stage B when A's cost per candidate
divided by the fraction of candidates it rejects is the smaller. On random
depth-3 trees (2-core CPU): convergence costs 0.06 ms (``bcls``) to 0.2 ms
(``reg``) a candidate on average (the ``cls``/``bcls`` trees without the
prediction leaf, about half, need no tensor work) and rejects 99.3% (``reg``)
to 99.9% (``cls``, ``bcls``) of them; validity costs 0.2-0.3 ms and rejects
70-83% of them, or about 1 ms on the trees that pass convergence, of which
it rejects almost none; rejection costs 7-20 ms. Each stage of each
candidate runs under a time limit; an exception, NaN, Inf or overrun is a
rejection with its reason.
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

    stages: list[Stage] = [ConvergenceStage(), ValidityStage(seed=seed), RejectionStage(seed=seed),
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
        # verdict instead of running again. Overruns are not remembered. A verdict is kept
        # as tuples of strings and numbers (see ``_frozen``), which the garbage collector
        # stops tracking: as StageResult objects, hundreds of thousands of them would make
        # every full collection walk them.
        self.memo_size = memo_size
        self._memo: dict[tuple[str, str], tuple[tuple, ...]] = {}

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
            self._memo[key] = _frozen(verdict.results)
        return verdict

    def _replay(self, candidate: Candidate, results: tuple[tuple, ...]) -> Verdict:
        verdict = Verdict(candidate, [StageResult(stage, passed, reason, dict(numbers), 0.0)
                                      for stage, passed, reason, numbers in results])
        self.funnel.candidates += 1
        for r in verdict.results:
            self.funnel.record(r)
        if verdict.passed:
            self.funnel.passed += 1
        return verdict


def _frozen(results: list[StageResult]) -> tuple[tuple, ...]:
    """``(stage, passed, reason, ((name, number), ...))`` per result: the verdict without its timings."""
    return tuple((r.stage, r.passed, r.reason, tuple(r.numbers.items())) for r in results)

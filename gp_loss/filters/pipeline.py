"""The staged filter pipeline: cheapest stage first, stop at the first rejection.

Default order (CSE-Autoloss, Liu et al., ICLR 2021; AutoLoss-Zero, Li et al., CVPR 2022):

1. ``convergence``: CSE-Autoloss convergence-property verification;
2. ``validity``: finite loss and gradient, depends on prediction and target;
3. ``range``: loss and gradient within a bound (1e4) at sample and confident
   predictions, in fp32 and under bf16 autocast (usable outside Adam and in mixed precision);
4. ``rejection``: AutoLoss-Zero loss-rejection protocol (Eq. 3);
5. ``equivalence``: gradient-equivalence signature (never rejects; marks cache hits);
6. ``simulation``: CSE-Autoloss model-optimisation simulation (optional, costly).

A candidate passes only if every stage passes it, so the order decides the
cost, not the verdict. Stage A goes before stage B when A's cost per candidate
divided by the fraction of candidates it rejects is the smaller: on random
trees the convergence check is the cheapest and rejects nearly all of them,
and the rejection protocol, which optimises B predictions for several steps,
is the dearest (``gp-loss bench filters`` measures both). What each stage
does per kind comes from the kind's :class:`~gp_loss.kinds.KindSpec`. Each
stage of each candidate runs under a limit on its CPU time
(:func:`~gp_loss.timeout.time_limit`); an exception, NaN, Inf or overrun is a
rejection with its reason, and a limit of gp-loss's own (Python's recursion
limit) leaves the candidate "not judged", saying so. What a stage builds once
per kind (samples, networks, sweeps) is built before the first candidate of
that kind, outside the limit: it is not that candidate's cost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from deap import gp

from primitives import Kind

from gp_loss.filters.base import INTERNAL_LIMITS, Candidate, Stage, StageResult
from gp_loss.filters.funnel import Funnel
from gp_loss.filters.numeric_range import DEFAULT_BOUND, RangeStage
from gp_loss.runtime.threads import torch_threads
from gp_loss.timeout import TOO_SLOW, TimeLimitExceeded, time_limit


@dataclass
class Verdict:
    """All stage results of one tree; ``passed`` if none rejected."""

    kind: Kind
    tree: gp.PrimitiveTree
    results: list[StageResult] = field(default_factory=list)
    judged: Candidate | None = field(default=None, repr=False)

    @property
    def candidate(self) -> Candidate:
        """The stages' candidate (what they compiled and left in its ``info``), or, for a verdict
        replayed from the memo, a new one."""
        if self.judged is None:
            self.judged = Candidate(self.kind, self.tree)
        return self.judged

    @property
    def passed(self) -> bool:
        for r in self.results:  # (a loop: asked for every random tree drawn, and cheaper than all())
            if not r.passed:
                return False
        return True

    @property
    def rejection(self) -> StageResult | None:
        return next((r for r in self.results if not r.passed), None)

    def to_dict(self) -> dict:
        return {"formula": str(self.tree), "kind": self.kind.name,
                "passed": self.passed, "stages": [r.to_dict() for r in self.results]}


def default_stages(simulate: bool = False, seed: int = 0, range_bound: float | None = DEFAULT_BOUND) -> list[Stage]:
    """The stages of the module docstring, with their documented defaults (``range_bound=None``: no range stage)."""
    from gp_loss.filters.convergence import ConvergenceStage
    from gp_loss.filters.equivalence import EquivalenceStage
    from gp_loss.filters.rejection import RejectionStage
    from gp_loss.filters.validity import ValidityStage

    # The equivalence stage reuses the rejection stage's signatures only when their seeds agree.
    stages: list[Stage] = [ConvergenceStage(), ValidityStage(seed=seed)]
    if range_bound is not None:
        stages.append(RangeStage(range_bound, seed=seed))
    stages += [RejectionStage(seed=seed), EquivalenceStage(seed=seed)]
    if simulate:
        from gp_loss.filters.simulation import SimulationStage
        stages.append(SimulationStage(seed=seed))
    return stages


class FilterPipeline:
    """Run candidates through ``stages`` with a per-stage time limit (seconds of CPU time) and a funnel."""

    def __init__(self, stages: list[Stage], time_limit_s: float | None = 10.0, num_threads: int | None = 1,
                 memo_size: int = 0):
        # Tiny tensors: torch's intra-op threads cost more than they save, and on a
        # busy machine a thread waiting for a descheduled one makes a stage many times slower.
        self.num_threads = num_threads
        self.stages = list(stages)
        self.time_limit_s = time_limit_s
        self.funnel = Funnel([s.name for s in self.stages])
        # Verdicts by tree (its node names): random trees repeat often, and the stages are
        # deterministic, so a repeat replays its verdict instead of running again. Overruns
        # are not remembered. A verdict is kept as tuples of strings and numbers (see
        # ``_frozen``), which the garbage collector stops tracking: as StageResult objects,
        # hundreds of thousands of them would make every full collection walk them.
        self.memo_size = memo_size
        self._memo: dict[tuple[str, tuple[str, ...]], tuple[tuple, ...]] = {}
        self._prepared: set[str] = set()  # the kinds every stage has been prepared for

    def prepare(self, kind_name: str) -> None:
        """Have every stage build what it needs for ``kind_name`` (once), outside any time limit.

        Building a kind's samples can take seconds; charged to the first candidate of
        that kind, it would be the likeliest candidate of all to overrun its limit.
        """
        if kind_name in self._prepared:
            return
        self._prepared.add(kind_name)
        with torch_threads(self.num_threads):
            for stage in self.stages:
                prepare = getattr(stage, "prepare", None)
                if prepare is None:
                    continue
                try:
                    prepare(kind_name)
                except Exception:  # the stage meets the same error on each candidate, and gives it as a reason
                    pass

    def _run_stage(self, stage: Stage, candidate: Candidate) -> StageResult:
        start = time.perf_counter()
        try:
            with time_limit(self.time_limit_s):
                result = stage(candidate)
        except TimeLimitExceeded as err:
            result = StageResult(stage.name, False, f"{TOO_SLOW}: {err}", timed_out=True)
        except INTERNAL_LIMITS as err:  # ours, not the loss's: say so
            result = StageResult(stage.name, False, f"not judged: {type(err).__name__} inside gp-loss ({err}); "
                                                    f"the loss itself may be fine", judged=False)
        except Exception as err:  # a stage must not stop the run for one candidate
            result = StageResult(stage.name, False, f"{type(err).__name__}: {err}")
        result.seconds = time.perf_counter() - start
        return result

    def run(self, candidate: Candidate, first: StageResult | None = None) -> Verdict:
        """All stages until the first rejection; records the funnel.

        ``first``: the first stage's result if it was already judged (:meth:`check_many`).
        """
        if first is not None and not first.passed:  # rejected already: no stage left to run
            return self._record(Verdict(candidate.kind, candidate.tree, [first], judged=candidate))
        self.prepare(candidate.kind.name)
        with torch_threads(self.num_threads):
            verdict = Verdict(candidate.kind, candidate.tree, judged=candidate)
            for i, stage in enumerate(self.stages):
                result = first if i == 0 and first is not None else self._run_stage(stage, candidate)
                verdict.results.append(result)
                if not result.passed:
                    break
            return self._record(verdict)

    def _record(self, verdict: Verdict) -> Verdict:
        """Count a verdict in the funnel."""
        self.funnel.candidates += 1
        for r in verdict.results:
            self.funnel.record(r)
        if verdict.passed:
            self.funnel.passed += 1
        return verdict

    def check(self, kind: Kind, tree: gp.PrimitiveTree) -> Verdict:
        """Run ``tree`` through the stages (it is compiled when a stage first needs it; a tree that
        does not compile is rejected by that stage, with the error as its reason)."""
        return next(self.check_many(kind, [tree]))

    def check_many(self, kind: Kind, trees: Iterable[gp.PrimitiveTree]) -> Iterator[Verdict]:
        """:meth:`check` of each tree in turn, lazily, with the first stage judging them all at once.

        Yields exactly the verdicts that calling :meth:`check` on each tree would
        give, in order, and records a tree in the funnel only when its verdict is
        handed out: a caller that stops at the first pass (breeding) counts what
        checking one tree at a time would. A first stage with ``judge_many``
        (convergence) judges every tree that is not in the memo in one call; the
        later stages run on a tree when its verdict is asked for. The trees the
        first stage rejects are remembered at once, asked for or not.
        """
        trees = list(trees)
        keys = [(kind.name, _names(tree)) for tree in trees]
        fresh: dict[int, Candidate] = {}  # position -> candidate, for the first copy of each unmemoised tree
        seen: set[tuple] = set()
        for i, key in enumerate(keys):
            if key in seen or (self.memo_size and key in self._memo):
                continue
            seen.add(key)
            fresh[i] = Candidate(kind, trees[i], key[1])
        first: dict[int, StageResult] = {}
        if len(fresh) > 1 and self.stages and hasattr(self.stages[0], "judge_many"):
            first = dict(zip(fresh, self._judge_many(self.stages[0], list(fresh.values()))))
            for i, result in first.items():  # complete verdicts, kept even if never asked for
                if not result.passed:
                    self._remember(keys[i], [result])
        for i, (tree, key) in enumerate(zip(trees, keys)):
            if i in fresh:
                verdict = self.run(fresh[i], first.get(i))
                if i in first and not first[i].passed:
                    yield verdict  # remembered when judged
                    continue
            elif self.memo_size and key in self._memo:
                yield self._replay(kind, tree, self._memo[key])
                continue
            else:  # a repeat whose first copy was not remembered (an overrun)
                verdict = self.run(Candidate(kind, tree, key[1]))
            self._remember(key, verdict.results)
            yield verdict

    def _judge_many(self, stage, candidates: list[Candidate]) -> list[StageResult]:
        """``stage.judge_many(candidates)`` under the time limit; after an overrun or error, one at a time."""
        for kind_name in {c.kind.name for c in candidates}:
            self.prepare(kind_name)
        with torch_threads(self.num_threads):
            try:
                with time_limit(self.time_limit_s):
                    return stage.judge_many(candidates)
            except Exception:  # TimeLimitExceeded too: find the culprit, each under its own limit
                return [self._run_stage(stage, c) for c in candidates]

    def _remember(self, key: tuple, results: list[StageResult]) -> None:
        """Keep a verdict for repeats of its tree (not an overrun, the machine may just have been busy;
        nor a verdict a limit of gp-loss left unjudged)."""
        if not self.memo_size:
            return
        for r in results:
            if r.timed_out or not r.judged:
                return
        if len(self._memo) >= self.memo_size and key not in self._memo:
            self._memo.clear()
        self._memo[key] = _frozen(results)

    def _replay(self, kind: Kind, tree: gp.PrimitiveTree, results: tuple[tuple, ...]) -> Verdict:
        return self._record(Verdict(kind, tree, [StageResult(stage, passed, reason, dict(numbers), 0.0, judged)
                                                 for stage, passed, reason, numbers, judged in results]))


def _names(tree: gp.PrimitiveTree) -> tuple[str, ...]:
    """The memo's key of a tree: its node names in prefix order, which fix its formula (the
    arity of every operator is known), and are cheaper to collect than the formula's text."""
    return tuple([node.name for node in tree])


def _frozen(results: list[StageResult]) -> tuple[tuple, ...]:
    """``(stage, passed, reason, ((name, number), ...), judged)`` per result: the verdict without its timings."""
    return tuple([(r.stage, r.passed, r.reason, tuple(r.numbers.items()), r.judged) for r in results])

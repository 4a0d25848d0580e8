"""Throughput and selectivity of the filter stages on candidates made as the search makes them.

Two measurements in one run:

* **search mix**: candidates come from AutoLoss-Zero's offspring rule applied
  to a small aging pool of parents (random depth-3 trees at first; survivors
  join the pool), so the mix of fresh and mutated trees is the search's own.
  Each survivor is recorded in the gradient-equivalence cache, as the search
  records it after proxy training, so later equivalents count as reused
  rather than as new proxy trainings.
* **random init**: ``random_trees`` fresh random depth-3 trees through a fresh
  pipeline; the selectivity target of the filters is stated on these.

And one check: every paper loss of the kind (:data:`~gp_loss.paper_losses.PAPER_LOSSES`,
the baselines a search must beat) must pass stages 1-4 (:func:`check_baselines`):
filters that reject a baseline are too strict, however fast they are.
"""
from __future__ import annotations

import random
import time
from collections import deque

from primitives import Kind

from gp_loss.evolution.mutation import OffspringConfig, make_offspring
from gp_loss.filters.equivalence import EquivalenceStage
from gp_loss.filters.pipeline import FilterPipeline, Verdict, default_stages
from gp_loss.language.generate import random_tree
from gp_loss.language.parse import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES

# Placeholder fitness stored for survivors: the bench trains nothing.
_NOT_TRAINED = float("nan")


def _record_survivor(pipeline: FilterPipeline, verdict: Verdict) -> bool:
    """Record a passing candidate in the equivalence cache; True if it would be proxy-trained."""
    stage = next(s for s in pipeline.stages if isinstance(s, EquivalenceStage))
    if verdict.candidate.info.get("equivalent_fitness") is not None:
        return False
    stage.record(verdict.candidate, _NOT_TRAINED)
    return True


def _summary(pipeline: FilterPipeline, wall: float, trained: int) -> dict:
    funnel = pipeline.funnel
    per_stage = {name: (60 * s.entered / s.seconds if s.seconds else float("inf"))
                 for name, s in funnel.stages.items()}
    n = funnel.candidates
    return {
        "seconds": wall,
        "candidates": n,
        "candidates_per_minute": 60 * n / wall if wall else 0.0,
        "stage_candidates_per_minute": per_stage,
        "rejected_fraction": funnel.rejection_rate,
        "passed": funnel.passed,
        "reused": funnel.passed - trained,
        "to_proxy_training": trained,
        "filtered_fraction": 1 - trained / n if n else 0.0,
        "funnel": funnel.to_dict(),
        "funnel_table": funnel.table(),
    }


def check_baselines(kind: Kind, seed: int = 0) -> dict[str, dict]:
    """Each paper loss of ``kind`` through the default stages on a fresh pipeline, by name.

    Per loss: ``passed``; where a stage rejects it, that ``stage`` and its ``reason``
    (else ``None`` and ``""``); and the rejection protocol's metric ``gain`` when
    that stage ran (else ``None``). Empty for a kind without paper losses.
    """
    pipeline = FilterPipeline(default_stages(seed=seed))
    baselines = {}
    for name, paper in PAPER_LOSSES.items():
        if paper.kind != kind.name:
            continue
        verdict = pipeline.check(kind, parse_formula(kind, paper.formula))
        rejected = verdict.rejection
        gain = next((r.numbers.get("gain") for r in verdict.results if r.stage == "rejection"), None)
        baselines[name] = {"passed": verdict.passed, "stage": rejected.stage if rejected else None,
                           "reason": rejected.reason if rejected else "", "gain": gain}
    return baselines


def format_baselines(baselines: dict[str, dict]) -> str:
    """One line: ``baselines: seg_ce passed (gain 0.69), ...``, a rejected one with its stage and reason."""
    if not baselines:
        return "baselines: none (no paper loss of this kind)"
    parts = []
    for name, b in baselines.items():
        gain = f" (gain {b['gain']:.3g})" if b.get("gain") is not None else ""
        parts.append(f"{name} passed{gain}" if b["passed"]
                     else f"{name} REJECTED by {b['stage']}: {b['reason']}")
    failed = sum(not b["passed"] for b in baselines.values())
    verdict = (f"all {len(baselines)} pass stages 1-4" if not failed
               else f"{failed} of {len(baselines)} rejected")
    return f"baselines ({verdict}): " + ", ".join(parts)


def bench_filters(kind: Kind, seconds: float, seed: int = 0, pool_size: int = 20,
                  max_candidates: int | None = None, random_trees: int = 1000,
                  parents: list | None = None) -> dict:
    """Run stages 1–4 on the search mix for ``seconds``, then on ``random_trees`` random trees.

    Returns ``{"kind", "search": {...}, "random_init": {...}, "generation_seconds",
    "baselines": {...}}`` (``baselines``: :func:`check_baselines`, outside the timed parts) where
    the two timed parts have candidates per minute (overall and per stage), the rejected fraction,
    how many passing candidates were gradient-equivalent to an earlier one (``reused``),
    how many would go on to proxy training, and the funnel. ``parents`` (trees)
    start the pool in place of random trees, e.g. to bench a search started from CE.
    """
    rng = random.Random(seed)
    config = OffspringConfig()
    if parents:
        pool = deque(parents, maxlen=pool_size)
    else:
        pool = deque((random_tree(kind, config.init_depth, rng) for _ in range(pool_size)), maxlen=pool_size)
    pipeline = FilterPipeline(default_stages(seed=seed))
    generate_s, trained = 0.0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if max_candidates is not None and pipeline.funnel.candidates >= max_candidates:
            break
        t0 = time.perf_counter()
        tree = make_offspring(kind, rng.choice(pool), rng, config)
        generate_s += time.perf_counter() - t0
        verdict = pipeline.check(kind, tree)
        if verdict.passed:
            pool.append(tree)
            trained += _record_survivor(pipeline, verdict)
    search = _summary(pipeline, time.perf_counter() - start, trained)

    fresh = FilterPipeline(default_stages(seed=seed))
    rng_init = random.Random(seed + 1)
    trained = 0
    start = time.perf_counter()
    for _ in range(random_trees):
        verdict = fresh.check(kind, random_tree(kind, config.init_depth, rng_init))
        if verdict.passed:
            trained += _record_survivor(fresh, verdict)
    random_init = _summary(fresh, time.perf_counter() - start, trained)
    return {"kind": kind.name, "search": search, "random_init": random_init,
            "generation_seconds": generate_s, "baselines": check_baselines(kind, seed)}

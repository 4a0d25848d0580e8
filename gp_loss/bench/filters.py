"""Throughput and selectivity of the filter stages on candidates made as the search makes them.

Candidates come from AutoLoss-Zero's offspring rule applied to a small aging
pool of parents (random depth-3 trees at first; survivors join the pool), so
the mix of fresh and mutated trees is the search's own.
"""
from __future__ import annotations

import random
import time
from collections import deque

from primitives import Kind

from gp_loss.evolution.mutation import OffspringConfig, make_offspring
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.language.generate import random_tree


def bench_filters(kind: Kind, seconds: float, seed: int = 0, pool_size: int = 20,
                  max_candidates: int | None = None) -> dict:
    """Run stages 1–4 for ``seconds`` of wall time; return rates and the funnel."""
    rng = random.Random(seed)
    config = OffspringConfig()
    pool = deque((random_tree(kind, config.init_depth, rng) for _ in range(pool_size)), maxlen=pool_size)
    pipeline = FilterPipeline(default_stages(seed=seed))
    generate_s = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if max_candidates is not None and pipeline.funnel.candidates >= max_candidates:
            break
        t0 = time.perf_counter()
        tree = make_offspring(kind, rng.choice(pool), rng, config)
        generate_s += time.perf_counter() - t0
        if pipeline.check(kind, tree).passed:
            pool.append(tree)
    wall = time.perf_counter() - start
    funnel = pipeline.funnel
    per_stage = {name: (60 * s.entered / s.seconds if s.seconds else float("inf"))
                 for name, s in funnel.stages.items()}
    return {
        "kind": kind.name,
        "seconds": wall,
        "candidates": funnel.candidates,
        "candidates_per_minute": 60 * funnel.candidates / wall if wall else 0.0,
        "stage_candidates_per_minute": per_stage,
        "generation_seconds": generate_s,
        "rejected_fraction": funnel.rejection_rate,
        "funnel": funnel.to_dict(),
        "funnel_table": funnel.table(),
    }

"""Which found losses go to the final retraining: the hall of fame's best, checked at the final length.

The hall of fame orders losses by one proxy training each, on one seed, a fraction
of the final schedule. Picking its first as "top1" picks the luckiest and the
quickest starter: a loss can lead at the proxy's length and become unstable over the
longer final schedule. So, as Hyperband (Li et al., JMLR 2018) ends with its last
rung at the whole budget, the hall of fame's best ``2 × final_top`` are trained for
the final schedule with ``selection_seeds`` seeds of their own, scored on the
validation split (:meth:`~gp_loss.tasks.base.Task.selection_score`; never the test
split the final score is measured on), and the best ``final_top`` by mean become
``top1``, ``top2``, … in that order. ``final.json`` keeps what chose them.
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from gp_loss.evolution import jobs
from gp_loss.evolution.individual import formulas_of
from gp_loss.evolution.jobs import TrainJob
from gp_loss.runtime.progress import Progress, map_reporting
from gp_loss.runtime.terminal import safe_line

if TYPE_CHECKING:
    from gp_loss.evolution.search import Search

Formulas = dict[str, str]  # branch name -> formula text
Entry = tuple[str, Formulas, float | None]  # (name, formulas, proxy fitness)
# Candidates per final place: enough to replace a top loss that fails at the final length.
POOL_PER_PLACE = 2


def top_entries(search: "Search") -> list[Entry]:
    """``(top<rank>, formulas, proxy fitness)`` of the hall of fame's best ``config.final_top``."""
    return [(f"top{rank}", formulas_of(search.layout, ind), ind.fitness.values[0])
            for rank, ind in enumerate(list(search.hall_of_fame)[:search.config.final_top], 1)]


def choose_final_top(search: "Search") -> tuple[list[Entry], dict | None]:
    """The found losses of the final retraining, best first, and the record of how they were chosen.

    Returns ``(entries, selection)``: ``entries`` as :func:`top_entries`; ``selection`` (for
    ``final.json``) is ``None`` when nothing was chosen (``selection_seeds`` 0, or an empty hall
    of fame), else ``{"metric", "seeds", "candidates": [{"formulas", "hall_of_fame_rank",
    "proxy_fitness", "scores", "mean"}, …]}`` in the chosen order. A candidate's failed training
    scores the task's failure score, so an unstable loss falls back.
    """
    cfg = search.config
    pool = list(search.hall_of_fame)[:POOL_PER_PLACE * cfg.final_top]
    if cfg.selection_seeds == 0 or not pool:
        return top_entries(search), None
    seeds = cfg.selection_seed_list
    formulas = [formulas_of(search.layout, ind) for ind in pool]
    job_list = [TrainJob(config=search.config_dict, formulas=f, seed=seed, selection=True)
                for f in formulas for seed in seeds]
    with Progress(len(job_list), "choosing the final top", enabled=search.recorder.progress_enabled) as progress:
        progress.line(f"choosing the final top: the hall of fame's best {len(pool)} x {len(seeds)} seed(s) = "
                      f"{len(job_list)} trainings of the final schedule, scored on validation")

        def finished(index: int, outcome) -> None:
            progress.step()
            rank, seed = index // len(seeds) + 1, job_list[index].seed
            status = "" if outcome.status == "ok" else f" ({outcome.status})"
            progress.line(safe_line(f"choice {progress.done}/{len(job_list)} | hall of fame #{rank} seed {seed}: "
                                    f"validation {search.metric} {100 * outcome.score:.2f}{status} "
                                    f"| {progress.seconds():.0f} s"))

        outcomes = map_reporting(search.mapper, jobs.evaluate, job_list, finished)
    candidates = []
    for rank, (ind, f) in enumerate(zip(pool, formulas), 1):
        scores = [o.score for o in outcomes[(rank - 1) * len(seeds):rank * len(seeds)]]
        candidates.append({"formulas": f, "hall_of_fame_rank": rank, "proxy_fitness": ind.fitness.values[0],
                           "scores": scores, "mean": statistics.fmean(scores)})
    candidates.sort(key=lambda c: (-c["mean"], c["hall_of_fame_rank"]))  # stable: ties keep the proxy's order
    entries = [(f"top{place}", c["formulas"], c["proxy_fitness"])
               for place, c in enumerate(candidates[:cfg.final_top], 1)]
    return entries, {"metric": f"validation {search.metric}", "seeds": seeds, "candidates": candidates}

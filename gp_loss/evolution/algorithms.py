"""The evolution loops, written out plainly (in the manner of DEAP's ``algorithms.py``).

Each loop runs until the budget is spent, one generation at a time: choose
parents, make children (each bred through the filters, then trained unless an
equivalent loss's score is known), update the population, and end the generation
(logbook, then the recorder's run files and checkpoint). A loop resumed from a
checkpoint continues at the generation it stopped in.
"""
from __future__ import annotations

from typing import Callable

from gp_loss.evolution.schemes import AUTOLOSS_ZERO, CSE_AUTOLOSS
from gp_loss.evolution.search import Search
from gp_loss.evolution.variation import AGING, GIVEN, INIT, PAIR


def aging_evolution(search: Search) -> None:
    """AutoLoss-Zero (Li et al., CVPR 2022, section 3.2).

    K random genomes of depth D start the population (with ``warm_start``, the baselines first:
    :meth:`Search.warm_start`). Each generation picks
    every parent by a tournament over T% of the population, makes a child by
    copy, re-initialisation or two typed mutations (repeated until it passes
    the filters), trains it, and appends it; only the newest P stay.
    """
    cfg = search.config
    if search.generation == 0:
        known, given = search.warm_start()
        count = max(1, search.affordable(max(1, cfg.population - len(known))))
        given = given[:count]
        children = search.make_children([(GIVEN, [g]) for g in given] + [(INIT, [])] * (count - len(given)))
        search.population.extend(known + children)
        search.end_generation()

    while search.budget_left():
        parents = [search.toolbox.select(search.population, 1)[0] for _ in range(search.slots())]
        children = search.make_children([(AGING, [parent]) for parent in parents])
        search.population.extend(children)
        del search.population[:-cfg.max_population]  # aging: the oldest leave
        search.end_generation()


def cse_evolution(search: Search) -> None:
    """CSE-Autoloss (Liu et al., ICLR 2021): evolve from the start formulas.

    The population starts as the start genome and K-1 mutants of it (fewer when the
    budget is smaller than K). Each
    generation picks two parents per child by tournament; the child is a
    one-point crossover of one searched branch (height-limited like DEAP's
    ``staticLimit``), then mutated, repeated until it passes the filters.
    The best K of parents and children survive.

    With ``search_in_turn`` the searched branches are searched one at a time, as
    CSE-Autoloss searches a detector's classification branch with the regression
    branch fixed, then the regression branch with the classification branch fixed
    at the best found. The budget is split into equal consecutive phases, one per
    searched branch in ``search`` order (phase p covers evaluations
    ``[p*B//n, (p+1)*B//n)``; :meth:`SearchConfig.phase_at`); in each, children
    vary only the phase's branch, and no generation crosses a phase's end. The
    first phase starts from the start genome as above; each later one re-seeds
    the population from the best genome found so far (the hall of fame's best),
    kept as it is with its known score (it is not trained again), and K-1
    mutants of it in the phase's branch. The logbook's ``phase`` column names
    the branch of each generation.
    """
    cfg = search.config
    if search.generation == 0:
        row, branches = search.phase_row(), search.phase_branches()
        start = search.start_individual()
        known, given = search.warm_start()
        # Like the zero scheme's, generation 0 never makes more children than the budget (or phase) allows.
        count = max(1, search.affordable(max(1, cfg.population - len(known))))
        given = given[:count - 1]
        children = search.make_children([(GIVEN, [start])] + [(GIVEN, [g]) for g in given]
                                        + [(PAIR, [start, start])] * (count - 1 - len(given)), branches)
        search.population.extend(known + children)
        search.end_generation(**row)

    while search.budget_left():
        row, branches = search.phase_row(), search.phase_branches()
        if search.phase_starts():
            # A new phase: the best so far, kept with its score, and mutants of it in the phase's branch.
            best = search.best_kept()
            count = search.affordable(cfg.population - 1)
            children = search.make_children([(PAIR, [best, best])] * count, branches) if count > 0 else []
            search.population[:] = [best] + children
        else:
            pairs = [search.toolbox.select(search.population, 2) for _ in range(search.slots())]
            children = search.make_children([(PAIR, pair) for pair in pairs], branches)
            search.population[:] = search.toolbox.select_best(search.population + children, cfg.population)
        search.end_generation(**row)


SCHEMES: dict[str, Callable[[Search], None]] = {AUTOLOSS_ZERO: aging_evolution, CSE_AUTOLOSS: cse_evolution}

"""How a child is made from its parents: the breeding modes and the variations they draw.

A breeding job has a **mode**, fixed by the scheme's loop: what it is given
and which variations it may draw. Each attempt at a child then applies the
**variation** drawn once per child from the job's seed.

* ``init`` (no parent): fresh random trees (variation ``init``);
* ``aging`` (one parent): ``copy``, ``reinit`` or ``mutation``, the offspring
  rule of AutoLoss-Zero's aging evolution (Li et al., CVPR 2022);
* ``pair`` (two parents): ``crossover`` (then maybe a mutation) or ``mutation``
  of one searched branch, as in CSE-Autoloss (Liu et al., ICLR 2021);
* ``given`` (the genome itself): ``copy``, without the filters (CSE-Autoloss's
  start genome).

A job also names the branches it may vary (``BreedJob.branches``: the searched
branches, or one of them while the search takes them in turn); the others are
copied from the parent (for ``init``, taken from the start formulas).
``init``, ``reinit`` and the aging ``mutation`` change every one of those
branches: :func:`vary_branch` makes one attempt at one branch, and breeding
repeats it on each branch in turn until that branch passes the filters
(:func:`per_branch`). ``crossover`` and the pair ``mutation`` change one branch
per attempt (:func:`vary_pair`).
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from deap import gp

from primitives import get_kind

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.crossover import limited_crossover
from gp_loss.evolution.mutation import make_offspring, mutate
from gp_loss.language.generate import random_tree_reading

if TYPE_CHECKING:
    from gp_loss.evolution.worker import WorkerContext

# Breeding modes
INIT = "init"
AGING = "aging"
PAIR = "pair"
GIVEN = "given"
Mode = Literal["init", "aging", "pair", "given"]

# Variations
REINIT = "reinit"
COPY = "copy"
MUTATION = "mutation"
CROSSOVER = "crossover"
Variation = Literal["init", "reinit", "copy", "mutation", "crossover"]

# Rank of the expected cost of a child by its variation, cheapest last: a fresh random
# tree takes hundreds of filter tries, a mutant a few, a copy none (and no training).
_COST_RANK = {INIT: 0, REINIT: 0, CROSSOVER: 1, MUTATION: 1, COPY: 2}


def draw_variation(mode: Mode, cfg: SearchConfig, rng: random.Random) -> Variation:
    """What the child will be made by: the first draw of the job's random stream."""
    if mode == INIT:
        return INIT
    if mode == GIVEN:
        return COPY
    if mode == AGING:
        if rng.random() < cfg.p_copy:
            return COPY
        return REINIT if rng.random() < cfg.p_reinit else MUTATION
    return CROSSOVER if rng.random() < cfg.p_crossover else MUTATION


def cost_rank(mode: Mode, seed: int, cfg: SearchConfig) -> int:
    """0 for the costliest children (random trees) to 2 for copies, for scheduling.

    The variation is the first draw from the job's seed, so the search can
    read it ahead and hand out the long jobs first (fewer workers idle at the
    end of a generation) without changing any child.
    """
    return _COST_RANK[draw_variation(mode, cfg, random.Random(seed))]


def random_tree(ctx: WorkerContext, kind_name: str, rng: random.Random) -> gp.PrimitiveTree:
    """A random tree of the initial depth, among those that have the prediction leaf.

    The validity stage rejects every tree without it, so AutoLoss-Zero's "draw
    until the filters pass" gives the same children when only trees with the
    leaf are drawn (:func:`random_tree_reading`: the exact conditional
    distribution), and skips the random trees that lack it.
    """
    kind = get_kind(kind_name)
    return random_tree_reading(kind, ctx.config.init_depth, rng, kind.prediction)


def per_branch(mode: Mode, how: Variation) -> bool:
    """Whether the variation redraws every branch it may vary (bred one branch at a time, see ``jobs.breed``)."""
    return how in (INIT, REINIT) or (mode == AGING and how == MUTATION)


def base_child(ctx: WorkerContext, mode: Mode, parents: list, branches: list[str]) -> list:
    """The child before a per-branch variation: its trees in layout order, ``None`` where a branch will vary.

    The branches outside ``branches`` are the parent's (for ``init``, the start formulas').
    """
    varying = set(branches)
    if mode == INIT:
        return [None if name in varying else ctx.start[name].tree for name in ctx.layout]
    return [None if name in varying else tree for name, tree in zip(ctx.layout, parents[0])]


def vary_branch(ctx: WorkerContext, how: Variation, kind_name: str, tree: gp.PrimitiveTree | None,
                rng: random.Random) -> gp.PrimitiveTree:
    """One attempt at one branch for ``init``, ``reinit`` (a random tree) or the aging ``mutation``
    (AutoLoss-Zero's offspring rule applied to the parent's ``tree``)."""
    if how in (INIT, REINIT):
        return random_tree(ctx, kind_name, rng)
    return make_offspring(get_kind(kind_name), tree, rng, ctx.offspring)


def vary_pair(ctx: WorkerContext, how: Variation, parents: list, rng: random.Random,
              branches: list[str]) -> tuple[list, int]:
    """One attempt at a ``pair`` child: its trees in layout order, and the position of the branch that varied.

    One of ``branches`` is drawn; it is crossed with the second parent's (``crossover``),
    then mutated (always if the crossover changed nothing, else with ``p_mutation``).
    """
    cfg, layout = ctx.config, ctx.layout
    child = list(parents[0])
    i = list(layout).index(rng.choice(branches))
    kind = get_kind(layout[list(layout)[i]])
    tree = child[i]
    crossed = False
    if how == CROSSOVER:
        a, _ = limited_crossover(tree, parents[1][i], rng, cfg.max_height)
        crossed = str(a) != str(tree)
        tree = a
    if not crossed or rng.random() < cfg.p_mutation:
        mutated = mutate(kind, tree, rng)
        if mutated.height <= cfg.max_height and len(mutated) <= cfg.max_size:
            tree = mutated
    child[i] = tree
    return child, i

"""The work the search hands to ``toolbox.map``: breeding a child, training a genome.

All are top-level functions of plain data (formula text, seeds, the
configuration as a dict) returning plain dicts, so the serial map,
multiprocessing and SCOOP run them alike. Everything random inside a job
flows from the job's own seed, never from the worker's state, which is what
makes the hall of fame independent of the number of workers.

The search's unit of work is :func:`make_child`: breed one child through the
filters, then train it unless a gradient-equivalent loss was evaluated
before the generation began. One job per child, rather than a breeding
round and then a training round, leaves no barrier inside a generation:
a worker that drew a quick child goes straight on to the next one.

Each worker process keeps one :class:`WorkerContext` per configuration: the
filter pipeline (its random network and samples) and the task (its data)
are built once per process, not once per job.
"""
from __future__ import annotations

import atexit
import gc
import json
import os
import random
import time

import torch
from deap import gp

from primitives import get_kind

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.crossover import limited_crossover
from gp_loss.evolution.individual import formulas_of, freeze, genome_of, individual_from_formulas
from gp_loss.evolution.mutation import OffspringConfig, make_offspring, mutate
from gp_loss.filters.base import Candidate
from gp_loss.filters.equivalence import EquivalenceStage
from gp_loss.filters.funnel import Funnel
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.language.generate import random_tree_reading
from gp_loss.tasks import make_task


class WorkerContext:
    """Per-process state for one configuration: filters, signatures, task."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.layout = dict(config.branches)
        self.searched = frozenset(config.searched)  # asked once per tree drawn: kept, not rebuilt
        # The default stages in their order; equivalence is asked separately (signature()).
        stages = [s for s in default_stages(simulate=config.simulate, seed=config.seed) if s.name != "equivalence"]
        # Random trees are drawn among those with the prediction leaf (_random_tree), which
        # gives the same children only because this stage rejects every tree without it.
        assert any(s.name == "validity" for s in stages)
        self.pipeline = FilterPipeline(stages, time_limit_s=config.filter_time_limit_s, num_threads=None,
                                       memo_size=200_000)
        self.equivalence = EquivalenceStage(seed=config.seed)
        self._signatures: dict[tuple[str, str], tuple] = {}
        self._task = None
        self.start = config.start_genome()
        self.offspring = OffspringConfig(p_copy=0.0, p_reinit=0.0, n_mutations=config.n_mutations,
                                         init_depth=config.init_depth, max_height=config.max_height,
                                         max_size=config.max_size)

    @property
    def task(self):
        if self._task is None:
            self._task = make_task(self.config.task, self.config.task_options)
        return self._task

    def signature(self, kind_name: str, tree: gp.PrimitiveTree, candidate: Candidate | None = None) -> tuple:
        """Gradient-equivalence signature of one branch (cached by formula)."""
        key = (kind_name, str(tree))
        if key not in self._signatures:
            cand = candidate or Candidate(get_kind(kind_name), tree)
            self._signatures[key] = self.equivalence.signature(cand)
        return self._signatures[key]


_CONTEXTS: dict[str, WorkerContext] = {}


def context_for(config: dict) -> WorkerContext:
    """The worker's context for ``config`` (built on first use)."""
    key = json.dumps(config, sort_keys=True)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()  # one search per process at a time
        _CONTEXTS[key] = WorkerContext(SearchConfig.from_dict(config))
    return _CONTEXTS[key]


def _set_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# -- warming a worker up ------------------------------------------------------------

def prepare(config: dict) -> int:
    """Build this worker's context ahead of its first child; return the process id.

    Loads the task's data and runs the start formulas (if any) through the
    filters, which builds every stage's samples and networks. A worker that
    skipped this would spend its first child's job on it while the others
    wait at the end of the generation.
    """
    ctx = context_for(config)
    _set_threads(ctx.config.torch_threads)
    ctx.task
    _warm_up_optimizer()
    if ctx.start is not None:
        for branch in ctx.start:
            ctx.pipeline.check(branch.kind, branch.tree)
    _freeze_warm_objects()
    return os.getpid()


def _freeze_warm_objects() -> None:
    """Exempt everything alive after warm-up from the garbage collector's full passes.

    After the warm-up a worker holds about 380,000 objects (torch, torch._dynamo
    and their imports), and each full collection walked them all: about 0.2 s
    a collection, 0.4 s of the 7.4 s of breeding in the default search.
    ``gc.freeze`` moves them to a generation it never walks; reference counting
    still frees them. They are unfrozen at exit, so the interpreter's last
    collection sees them (otherwise triton's bindings report them as leaked).
    """
    global _UNFREEZE_AT_EXIT
    if not _UNFREEZE_AT_EXIT:
        atexit.register(gc.unfreeze)
        _UNFREEZE_AT_EXIT = True
    gc.freeze()


_UNFREEZE_AT_EXIT = False  # whether this process has registered gc.unfreeze with atexit


def _warm_up_optimizer() -> None:
    """One Adam step on a throwaway parameter.

    torch.optim's first step in a process imports torch._dynamo (about 900
    modules, 1.5-2 s): done here, it is not charged to the first training of
    the search, which the other workers would wait for.
    """
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([p])
    p.sum().backward()
    optimizer.step()


# -- breeding -------------------------------------------------------------------

def breed(job: dict) -> dict:
    """Make one child that passes the filters.

    ``job``: ``config`` (dict), ``seed`` (int), ``mode`` (``"init"``, ``"zero"``,
    ``"cse"`` or ``"given"``) and ``parents`` (formula dicts: none for init, one
    for zero, two for cse; for given, the genome itself, which skips the filters).
    The variation is drawn once (copy / re-initialise / mutate / cross) and
    repeated until every searched branch passes, up to ``max_breed_tries``.

    Returns ``formulas`` (``None`` if no child passed), ``signature``, ``how``,
    ``tries``, ``funnel`` (dict) and ``seconds``.
    """
    start = time.perf_counter()
    ctx = context_for(job["config"])
    cfg = ctx.config
    _set_threads(cfg.torch_threads)
    rng = random.Random(job["seed"])
    layout, searched = ctx.layout, ctx.searched
    parents = [individual_from_formulas(layout, p) for p in job["parents"]]
    funnel = Funnel([s.name for s in ctx.pipeline.stages])
    ctx.pipeline.funnel = funnel

    how = _draw_variation(job["mode"], cfg, rng)
    result = {"formulas": None, "signature": None, "how": how, "tries": 0}
    branches = [] if how == "copy" else [(i, name) for i, name in enumerate(layout) if name in searched]
    # Random trees are drawn RANDOM_BATCH tries at a time and their first searched branch
    # judged together (FilterPipeline.check_many): about one in 600 passes, and one
    # judgement of many costs little more than one of one. The trees are those that one try
    # at a time would draw, and only the tries up to the first pass are counted.
    batch = RANDOM_BATCH if how in ("init", "reinit") else 1
    tries = 0
    while tries < cfg.max_breed_tries and result["formulas"] is None:
        attempts = [_vary(ctx, job["mode"], how, parents, rng)
                    for _ in range(min(batch, cfg.max_breed_tries - tries))]
        firsts = (ctx.pipeline.check_many(get_kind(layout[branches[0][1]]), [a[branches[0][0]] for a in attempts])
                  if branches else [None] * len(attempts))
        for child, first in zip(attempts, firsts):
            tries += 1
            candidates = _passes(ctx, branches, child, first)
            if candidates is not None:
                sig = tuple(ctx.signature(layout[name], tree, candidates.get(name))
                            for name, tree in zip(layout, child))
                result.update(formulas=formulas_of(layout, child), signature=sig)
                break
    result.update(tries=tries, funnel=funnel.to_dict(), seconds=time.perf_counter() - start)
    return result


RANDOM_BATCH = 32


def _passes(ctx: WorkerContext, branches: list[tuple[int, str]], child: list, first) -> dict | None:
    """The candidates of the searched ``branches`` of ``child`` if all pass the filters, else None.

    ``first``: the first searched branch's verdict, already given.
    """
    candidates = {}
    for n, (i, name) in enumerate(branches):
        verdict = first if n == 0 else ctx.pipeline.check(get_kind(ctx.layout[name]), child[i])
        if not verdict.passed:
            return None
        candidates[name] = verdict.candidate
    return candidates


# Rank of the expected cost of a child by its variation, cheapest last: a fresh random
# tree takes hundreds of filter tries, a mutant a few, a copy none (and no training).
_COST_RANK = {"init": 0, "reinit": 0, "crossover": 1, "mutation": 1, "copy": 2}


def cost_rank(job: dict, cfg: SearchConfig) -> int:
    """0 for the costliest children (random trees) to 2 for copies, for scheduling.

    The variation is the first draw from the job's seed, so the search can
    read it ahead and hand out the long jobs first (fewer workers idle at the
    end of a generation) without changing any child.
    """
    return _COST_RANK[_draw_variation(job["mode"], cfg, random.Random(job["seed"]))]


def _draw_variation(mode: str, cfg: SearchConfig, rng: random.Random) -> str:
    """What the child will be made by, drawn once per child."""
    if mode == "init":
        return "init"
    if mode == "given":  # the child is the given genome itself (the cse scheme's start)
        return "copy"
    if mode == "zero":
        if rng.random() < cfg.p_copy:
            return "copy"
        return "reinit" if rng.random() < cfg.p_reinit else "mutation"
    return "crossover" if rng.random() < cfg.p_crossover else "mutation"


def _random_tree(ctx: WorkerContext, kind_name: str, rng: random.Random) -> gp.PrimitiveTree:
    """A random tree of the initial depth, among those that have the prediction leaf.

    The validity stage rejects every tree without it, so AutoLoss-Zero's "draw
    until the filters pass" gives the same children when only trees with the
    leaf are drawn (:func:`random_tree_reading`: the exact conditional
    distribution), and skips the 44% of random depth-3 ``cls`` trees that lack it.
    """
    kind = get_kind(kind_name)
    return random_tree_reading(kind, ctx.config.init_depth, rng, kind.prediction)


def _vary(ctx: WorkerContext, mode: str, how: str, parents: list, rng: random.Random) -> list:
    """One attempt at a child: a list of trees in layout order."""
    cfg, layout = ctx.config, ctx.layout
    if how == "copy":
        return list(parents[0])
    if how == "init":
        return [_random_tree(ctx, kind, rng) if name in ctx.searched
                else ctx.start[name].tree for name, kind in layout.items()]
    if mode == "zero":
        child = []
        for (name, kind), tree in zip(layout.items(), parents[0]):
            if name not in ctx.searched:
                child.append(tree)
            elif how == "reinit":
                child.append(_random_tree(ctx, kind, rng))
            else:
                child.append(make_offspring(get_kind(kind), tree, rng, ctx.offspring))
        return child
    # cse: one searched branch varies; crossover with the second parent, then mutation
    child = list(parents[0])
    i = list(layout).index(rng.choice(cfg.searched))
    kind = get_kind(layout[list(layout)[i]])
    tree = child[i]
    crossed = False
    if how == "crossover":
        a, _ = limited_crossover(tree, parents[1][i], rng, cfg.max_height)
        crossed = str(a) != str(tree)
        tree = a
    if not crossed or rng.random() < cfg.p_mutation:
        mutated = mutate(kind, tree, rng)
        if mutated.height <= cfg.max_height and len(mutated) <= cfg.max_size:
            tree = mutated
    child[i] = tree
    return child


# -- training --------------------------------------------------------------------

def evaluate(job: dict) -> dict:
    """Train the task under a genome: proxy fitness, or with ``final`` the test metric.

    ``job``: ``config`` (dict), ``formulas`` (branch -> text), ``seed``, ``final`` (bool).
    Returns :class:`~gp_loss.tasks.TrainOutcome` as a dict.
    """
    ctx = context_for(job["config"])
    cfg = ctx.config
    _set_threads(cfg.torch_threads)
    genome = genome_of(ctx.layout, individual_from_formulas(ctx.layout, job["formulas"]))
    if job.get("final"):
        outcome = ctx.task.final_score(genome, job["seed"])
    else:
        outcome = ctx.task.proxy_fitness(genome, job["seed"], cfg.eval_time_limit_s)
    return outcome.to_dict()


# -- one child: breed, then train ---------------------------------------------------

def make_child(job: dict) -> dict:
    """Breed one child (:func:`breed`) and train it unless its score is already known.

    ``job``: :func:`breed`'s fields plus ``known`` (signatures whose score the
    search will have when it records this child: those evaluated before this
    generation began, and given genomes'; a bred child equivalent to one of them
    reuses its score and is not trained), ``train_seed``, ``recorded`` (the formulas whose
    training for this slot finished before an interruption, or ``None``: a child
    with those formulas is not trained again), ``plan`` (an id shared by the
    children of one :meth:`~gp_loss.evolution.search.Search.make_children`) and
    ``slot`` (the child's place in it).

    Returns :func:`breed`'s result plus ``outcome``: ``"dropped"`` (no child
    passed), ``"reused"``, ``"twin"`` (equivalent to a sibling of an earlier slot
    that this process trained: the search records that sibling first and gives
    this child its score), ``"recorded"`` or ``"trained"``, and ``trained``
    (:func:`evaluate`'s result, for ``"trained"`` only).
    """
    result = breed(job)
    result["trained"] = None
    twins = _trained_siblings(job)
    sig = freeze(result["signature"]) if result["formulas"] is not None else None
    if result["formulas"] is None:
        result["outcome"] = "dropped"
    elif job["mode"] != "given" and sig in job["known"]:
        result["outcome"] = "reused"
    elif twins.get(sig, job["slot"]) < job["slot"]:
        result["outcome"] = "twin"
    elif result["formulas"] == job.get("recorded"):
        result["outcome"] = "recorded"
    else:
        result["outcome"] = "trained"
        result["trained"] = evaluate({"config": job["config"], "formulas": result["formulas"],
                                      "seed": job["train_seed"]})
    if result["outcome"] in ("trained", "recorded"):
        twins[sig] = min(job["slot"], twins.get(sig, job["slot"]))
    return result


# Signatures trained (or recovered) by this process for the current plan, with the lowest
# slot of each. Whatever the worker count, a child equivalent to a sibling of an earlier
# slot takes that sibling's score; a process that trained the sibling itself can skip
# training the twin, so a serial search never trains one.
_SIBLINGS: dict = {"plan": None, "trained": {}}


def _trained_siblings(job: dict) -> dict:
    if _SIBLINGS["plan"] != job["plan"]:
        _SIBLINGS.update(plan=job["plan"], trained={})
    return _SIBLINGS["trained"]

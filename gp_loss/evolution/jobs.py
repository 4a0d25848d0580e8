"""The work the search hands to ``toolbox.map``: warming a worker up, breeding a child, training a genome.

Jobs and their results are dataclasses of plain data (formula text, seeds,
the configuration as a dict, which keys the worker's context), defined at
module level with top-level functions, so the serial map, multiprocessing and
SCOOP pickle and run them alike. Everything random inside a job flows from
the job's own seed, never from the worker's state, which is what makes the
hall of fame independent of the number of workers.

The search's unit of work is :func:`make_child`: breed one child through the
filters, then train it unless a gradient-equivalent loss was evaluated
before the generation began. One job per child, rather than a breeding
round and then a training round, leaves no barrier inside a generation:
a worker that drew a quick child goes straight on to the next one.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Literal

from primitives import get_kind

from gp_loss.evolution import variation
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import formulas_of, freeze, genome_of, individual_from_formulas
from gp_loss.evolution.variation import Mode, Variation
from gp_loss.evolution.worker import WorkerContext, context_for, freeze_warm_objects, warm_up_optimizer
from gp_loss.filters.funnel import Funnel
from gp_loss.runtime.device import claimed_slot, resolve_device
from gp_loss.runtime.parallel import WorkerInfo, host_label
from gp_loss.runtime.threads import set_torch_threads
from gp_loss.tasks import TrainOutcome
from gp_loss.tasks.base import out_of_memory, out_of_memory_reason, release_memory

Formulas = dict[str, str]  # branch name -> formula text


@dataclass(frozen=True)
class BreedJob:
    """Make one child that passes the filters.

    ``mode`` (:mod:`~gp_loss.evolution.variation`) and ``parents``: none for
    ``init``, one for ``aging``, two for ``pair``; for ``given``, the genome itself.
    ``branches``: the branches the child may differ in, in the order ``pair`` mode
    draws from (the search sets it: the searched branches, or the one of the current
    phase with ``search_in_turn``); ``None``: every searched branch. The other
    branches are the parent's (for ``init``, the start formulas').
    """

    config: dict
    seed: int
    mode: Mode
    parents: list[Formulas]
    branches: list[str] | None = None


@dataclass
class BreedResult:
    """The child (``formulas`` and ``signature`` are ``None`` if no child passed), how it
    was made, the attempts it took, their filter funnel, and the job's seconds."""

    formulas: Formulas | None
    signature: tuple | None
    how: Variation
    tries: int
    funnel: Funnel
    seconds: float


@dataclass(frozen=True)
class TrainJob:
    """Train the task under ``formulas`` (or the task's ``baseline`` of that name): proxy fitness,
    with ``final`` the test metric, with ``selection`` the final schedule's validation metric
    (:meth:`~gp_loss.tasks.base.Task.selection_score`). ``fidelity``: the fraction of the proxy's
    length to train (successive halving's lower rungs; the final training is always whole)."""

    config: dict
    formulas: Formulas
    seed: int
    final: bool = False
    baseline: str | None = None
    fidelity: float = 1.0
    selection: bool = False


@dataclass(frozen=True)
class ChildJob:
    """Breed a child (``breed``), then train it with ``train_seed`` unless its score is known.

    ``known``: signatures whose score the search will have when it records this
    child (those evaluated before this generation began, and given genomes'); a
    bred child equivalent to one of them reuses its score and is not trained.
    ``recorded``: the formulas whose training for this slot finished before an
    interruption, or ``None``; a child with those formulas is not trained again.
    ``plan``: an id shared by the children of one
    :meth:`~gp_loss.evolution.search.Search.make_children`; ``slot``: the child's place in it.
    ``fidelity``: the fraction of the proxy it trains (the first rung of successive halving).
    """

    breed: BreedJob
    known: frozenset
    train_seed: int
    recorded: Formulas | None
    plan: str
    slot: int
    fidelity: float = 1.0


# What became of a child: no child passed the filters; its score is known; it is
# equivalent to a sibling of an earlier slot that this process trained (the search
# records that sibling first and gives this child its score); its training was
# recorded before an interruption; or it was trained now.
ChildOutcome = Literal["dropped", "reused", "twin", "recorded", "trained"]


@dataclass
class ChildResult:
    """The bred child, what became of it, and its training (for ``"trained"`` only)."""

    bred: BreedResult
    outcome: ChildOutcome
    trained: TrainOutcome | None = None


# -- warming a worker up ------------------------------------------------------------

# A warm-up job holds its worker this long. SCOOP hands a job to another worker only when the
# origin's queue holds more than 10 ms of work (by the median time of past jobs of the same
# function): jobs of a warm worker's microseconds would all stay on the origin, and workers on
# other hosts would never answer the warm-up.
PREPARE_HOLD_S = 0.05


def prepare(config: dict) -> WorkerInfo:
    """Build this worker's context ahead of its first child; return who it is (process, host, device).

    Loads the task's data, has every filter stage build its samples and networks
    for the searched kinds, and runs the start formulas (if any) through the
    filters. A worker that skipped this would spend its first child's job on it
    while the others wait at the end of the generation. Then it holds the worker for
    ``PREPARE_HOLD_S``, so that a round of warm-up jobs spreads over the workers.
    """
    ctx = context_for(config)
    set_torch_threads(ctx.config.torch_threads)
    ctx.task
    warm_up_optimizer()
    for kind_name in sorted({ctx.layout[name] for name in ctx.config.searched}):
        ctx.pipeline.prepare(kind_name)  # (a first candidate is never charged for it: see FilterPipeline.prepare)
        ctx.equivalence.prepare(kind_name)
    if ctx.start is not None:
        for branch in ctx.start:
            ctx.pipeline.check(branch.kind, branch.tree)
    freeze_warm_objects()
    time.sleep(PREPARE_HOLD_S)
    device = resolve_device(ctx.config.device)  # the task's own: the slot is claimed once per process
    return WorkerInfo(pid=os.getpid(), host=host_label(), device=str(device), slot=claimed_slot())


# -- breeding -------------------------------------------------------------------

RANDOM_BATCH = 32


def breed(job: BreedJob) -> BreedResult:
    """Make one child that passes the filters.

    The variation is drawn once (copy / re-initialise / mutate / cross); a given
    genome and a copy skip the filters. A variation that changes every varying
    branch (``init``, ``reinit``, the aging ``mutation``) breeds them one at a
    time, in layout order: the first is redrawn until it passes, then the second,
    and so on, all from the job's one random stream (:func:`_breed_branch`).
    Requiring every branch of one attempt to pass at once would need the
    product of the branches' pass rates (each small for random ``cls`` trees):
    with two branches no child would ever pass. ``pair`` mode changes one
    branch per attempt (crossover, mutation), repeated until that branch passes;
    the others are the parent's, which passed. Tries are counted over all
    branches, up to ``max_breed_tries``; then the slot is dropped.
    """
    start = time.perf_counter()
    ctx = context_for(job.config)
    cfg = ctx.config
    set_torch_threads(cfg.torch_threads)
    rng = random.Random(job.seed)
    layout = ctx.layout
    allowed = job_branches(job, cfg)
    parents = [individual_from_formulas(layout, p) for p in job.parents]
    stage_names = [s.name for s in ctx.pipeline.stages]
    funnel = ctx.pipeline.funnel = Funnel(stage_names)

    how = variation.draw_variation(job.mode, cfg, rng)
    child, candidates, tries = None, {}, 0
    if how == variation.COPY:
        child, tries = list(parents[0]), 1
    elif variation.per_branch(job.mode, how):
        child = variation.base_child(ctx, job.mode, parents, allowed)
        varying = [(i, name) for i, name in enumerate(layout) if name in allowed]
        for n, (i, name) in enumerate(varying):
            parent_tree = parents[0][i] if parents else None
            tree, verdict, used = _breed_branch(ctx, how, layout[name], parent_tree, rng,
                                                cfg.max_breed_tries - tries, rewind=n + 1 < len(varying))
            tries += used
            if tree is None:
                child = None
                break
            child[i], candidates[name] = tree, verdict.candidate
    else:  # pair: one branch per attempt
        while tries < cfg.max_breed_tries:
            attempt, i = variation.vary_pair(ctx, how, parents, rng, allowed)
            tries += 1
            name = list(layout)[i]
            verdict = ctx.pipeline.check(get_kind(layout[name]), attempt[i])
            if verdict.passed:
                child, candidates = attempt, {name: verdict.candidate}
                break
    formulas, signature = None, None
    if child is not None:
        signature = tuple(ctx.signature(layout[name], tree, candidates.get(name))
                          for name, tree in zip(layout, child))
        formulas = formulas_of(layout, child)
    # The result keeps this funnel: what the pipeline checks next (another job, a warm-up) is not this child's.
    ctx.pipeline.funnel = Funnel(stage_names)
    return BreedResult(formulas=formulas, signature=signature, how=how, tries=tries, funnel=funnel,
                       seconds=time.perf_counter() - start)


def job_branches(job: BreedJob, cfg: SearchConfig) -> list[str]:
    """The branches ``job`` may vary: its own ``branches``, or every searched branch."""
    return list(job.branches) if job.branches is not None else list(cfg.searched)


def _breed_branch(ctx: WorkerContext, how: Variation, kind_name: str, parent_tree, rng: random.Random,
                  tries_left: int, rewind: bool) -> tuple:
    """``(tree, verdict, tries)``: one branch redrawn (:func:`variation.vary_branch`) until it passes,
    within ``tries_left`` tries; ``(None, None, tries)`` if none passed.

    Random trees are drawn RANDOM_BATCH tries at a time and judged together
    (:meth:`FilterPipeline.check_many`): few of them pass, and one judgement of
    many costs little more than one of one. The trees are those that one try at a
    time would draw, and only the tries up to the first pass are counted. With
    ``rewind`` (another branch is bred after this one from the same stream), the
    stream is put back where one try at a time would have left it after the passing
    tree, so the batch size changes no child.
    """
    kind = get_kind(kind_name)
    batch = RANDOM_BATCH if how in (variation.INIT, variation.REINIT) else 1
    tries = 0
    while tries < tries_left:
        state = rng.getstate() if rewind and batch > 1 else None
        trees = [variation.vary_branch(ctx, how, kind_name, parent_tree, rng)
                 for _ in range(min(batch, tries_left - tries))]
        for k, (tree, verdict) in enumerate(zip(trees, ctx.pipeline.check_many(kind, trees))):
            tries += 1
            if verdict.passed:
                if state is not None and k + 1 < len(trees):
                    rng.setstate(state)
                    for _ in range(k + 1):  # the same draws again: only the stream's position matters
                        variation.vary_branch(ctx, how, kind_name, parent_tree, rng)
                return tree, verdict, tries
    return None, None, tries


def cost_rank(job: ChildJob, cfg: SearchConfig) -> int:
    """0 for the costliest children (random trees) to 2 for copies: see :func:`variation.cost_rank`."""
    return variation.cost_rank(job.breed.mode, job.breed.seed, cfg)


# -- training --------------------------------------------------------------------

def evaluate(job: TrainJob) -> TrainOutcome:
    """Train the task under a genome: proxy fitness, or with ``final`` the test metric.

    Running out of memory is the training's failure (status ``"error"``, reason ``out of memory: ...``)
    wherever in the training it happens, never the search's end: a task's training loop reports it
    itself (:meth:`~gp_loss.tasks.base.TrainingRun.failed`); here it is caught where the task raised
    it outside that loop (building the model, evaluating it).
    """
    ctx = context_for(job.config)
    try:
        return _train(ctx, job)
    except Exception as err:
        if not out_of_memory(err):
            raise
        release_memory(err, resolve_device(ctx.config.device))  # the task's own (the slot is kept)
        return TrainOutcome(0.0, "error", out_of_memory_reason(err))


def _train(ctx: WorkerContext, job: TrainJob) -> TrainOutcome:
    cfg = ctx.config
    set_torch_threads(cfg.torch_threads)
    if job.baseline is not None:  # by name: a baseline need not be formulas (a detector's own loss code)
        genome = ctx.task.baseline(job.baseline)
    else:
        genome = genome_of(ctx.layout, individual_from_formulas(ctx.layout, job.formulas))
    if job.final:
        return ctx.task.final_score(genome, job.seed)
    if job.selection:
        return ctx.task.selection_score(genome, job.seed)
    if job.fidelity != 1.0:
        return ctx.task.proxy_fitness(genome, job.seed, cfg.eval_time_limit_s, fidelity=job.fidelity)
    # A task written before successive halving takes no fidelity: it still runs single-fidelity searches.
    return ctx.task.proxy_fitness(genome, job.seed, cfg.eval_time_limit_s)


@dataclass(frozen=True)
class SignatureJob:
    """The gradient-equivalence signature of the genome ``formulas``.

    ``branches``: for :func:`start_rejections`, the branches to check (``None``: every searched branch).
    """

    config: dict
    formulas: Formulas
    branches: list[str] | None = None


def signature_of(job: SignatureJob) -> tuple:
    """The gradient-equivalence signature of the genome ``job.formulas`` (one per branch, in layout order).

    A job, so that the parent of a parallel search builds no filter samples of its own.
    """
    ctx = context_for(job.config)
    set_torch_threads(ctx.config.torch_threads)
    trees = individual_from_formulas(ctx.layout, job.formulas)
    return tuple(ctx.signature(kind, tree) for kind, tree in zip(ctx.layout.values(), trees))


def start_rejections(job: SignatureJob) -> dict[str, str]:
    """``{branch: "stage: reason"}`` for each of ``job.branches`` (default: the searched branches)
    of ``job.formulas`` that the filters reject.

    The CSE-Autoloss scheme evolves from its start formulas: one the filters reject
    would leave every generation without children, so the search refuses it up front.
    """
    ctx = context_for(job.config)
    set_torch_threads(ctx.config.torch_threads)
    trees = individual_from_formulas(ctx.layout, job.formulas)
    checked = set(job.branches if job.branches is not None else ctx.config.searched)
    rejected = {}
    for (name, kind), tree in zip(ctx.layout.items(), trees):
        if name in checked:
            verdict = ctx.pipeline.check(get_kind(kind), tree)
            if not verdict.passed:
                rejected[name] = f"{verdict.rejection.stage}: {verdict.rejection.reason}"
    return rejected


# -- one child: breed, then train ---------------------------------------------------

def make_child(job: ChildJob) -> ChildResult:
    """Breed one child (:func:`breed`) and train it (:func:`evaluate`) unless its score is already known."""
    bred = breed(job.breed)
    twins = _trained_siblings(job.plan)
    sig = freeze(bred.signature) if bred.formulas is not None else None
    trained = None
    if bred.formulas is None:
        outcome = "dropped"
    elif job.breed.mode != variation.GIVEN and sig in job.known:
        outcome = "reused"
    elif twins.get(sig, job.slot) < job.slot:
        outcome = "twin"
    elif bred.formulas == job.recorded:
        outcome = "recorded"
    else:
        outcome = "trained"
        trained = evaluate(TrainJob(config=job.breed.config, formulas=bred.formulas, seed=job.train_seed,
                                    fidelity=job.fidelity))
    if outcome in ("trained", "recorded"):
        twins[sig] = min(job.slot, twins.get(sig, job.slot))
    return ChildResult(bred=bred, outcome=outcome, trained=trained)


# Signatures trained (or recovered) by this process for the current plan, with the lowest
# slot of each. Whatever the worker count, a child equivalent to a sibling of an earlier
# slot takes that sibling's score; a process that trained the sibling itself can skip
# training the twin, so a serial search never trains one.
_SIBLINGS: dict = {"plan": None, "trained": {}}


def _trained_siblings(plan: str) -> dict:
    if _SIBLINGS["plan"] != plan:
        _SIBLINGS.update(plan=plan, trained={})
    return _SIBLINGS["trained"]

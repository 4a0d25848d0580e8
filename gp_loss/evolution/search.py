"""The state of one search and the steps the evolution loops are written in.

:mod:`gp_loss.evolution.algorithms` reads top to bottom like DEAP's
``algorithms.py``; the steps it calls live here: making children in parallel
(each bred through the filters, then trained unless the gradient-equivalence
cache knows its score), the hall of fame, the logbook and the budget. What
is written to the run directory, and when, is the
:class:`~gp_loss.evolution.recorder.Recorder`'s business: the search hands it
each evaluation as it is scored and each generation as it ends.

Reproducibility: selection draws from the global ``random`` (DEAP's
operators do), seeded from ``config.seed`` and saved in the checkpoint;
every child's job gets a seed derived from ``(seed, generation, slot)``;
every proxy training uses ``config.seed`` (common random numbers, so
losses are compared on the same initialisation and data order). None of it
depends on which worker runs a job.
"""
from __future__ import annotations

import itertools
import math
import os
import random
import statistics
import sys
import time
from typing import Iterable, Iterator, Protocol, TypeVar

import numpy as np
from deap import base, tools

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs
from gp_loss.evolution.config import SearchConfig, config_digest
from gp_loss.evolution.individual import (Individual, formulas_of, freeze, individual_from_dict,
                                          individual_from_formulas, individual_to_dict, rank, same_formulas)
from gp_loss.evolution.jobs import BreedJob, ChildJob, SignatureJob, TrainJob
from gp_loss.evolution.run_files import evaluation_record
from gp_loss.evolution.variation import GIVEN, Mode
from gp_loss.evolution.worker import breeding_stage_names
from gp_loss.filters.equivalence import EquivalenceCache
from gp_loss.filters.funnel import Funnel
from gp_loss.runtime.backend import Backend, WorkerInfo, missing_workers
from gp_loss.runtime.progress import map_reporting
from gp_loss.runtime.run_dir import JsonlLine
from gp_loss.runtime.terminal import safe_line
from gp_loss.tasks import TaskInfo, task_info
from gp_loss.tasks.base import FAILED_STATUSES, TrainOutcome
from gp_loss.timeout import TOO_SLOW, load_dependence

# 3: evaluation records carry their fidelity, and the state the successive-halving counters.
# 4: the detection and segmentation tasks' defaults (pretrained small backbones, a cosine schedule) differ,
#    and a run stores only the task options it was given.
STATE_VERSION = 4
# Stop when this many generations in a row trained nothing new (all offspring reused).
MAX_IDLE_GENERATIONS = 50
# Sums of fidelities such as 1/3 carry rounding: a budget within this of its end is spent.
BUDGET_SLACK = 1e-9
_PLAN_IDS = itertools.count()  # ids of make_children calls, unique in this process
WARM_UP_S = 60.0
# Warm-up stops waiting for missing workers after this long without a new one (a host down is
# reported soon after the start: SSH refuses at once, and joining takes seconds).
JOIN_QUIET_S = 15.0

T = TypeVar("T")


class SearchRecorder(Protocol):
    """What the search tells the run's record (:class:`~gp_loss.evolution.recorder.Recorder`)."""

    def evaluation(self, record: dict) -> None:
        """One proxy training, as soon as it is scored (a kill must not lose it)."""

    def generation(self, search: "Search") -> None:
        """The generation ``search.generation - 1`` has ended."""

    def set_aside(self, lines: list) -> None:
        """``(line, reason)`` pairs of the evaluation records that this search will not use."""

    def baselines_start(self, names: list[str], metric: str) -> None:
        """The baselines ``names`` are about to be trained (minutes, before the first generation), scored by
        ``metric``."""

    def baseline_trained(self, name: str, outcome) -> None:
        """The baseline ``name``'s proxy training ended as ``outcome`` (a :class:`TrainOutcome`)."""


def slot_seed(seed: int, generation: int, slot: int) -> int:
    """The seed of one breeding job: independent streams per (run, generation, slot)."""
    return int(np.random.SeedSequence([seed, generation, slot]).generate_state(1)[0])


def select_tournament(population: list, k: int, fraction: float, by_rank: bool = False) -> list:
    """DEAP tournament selection over ``fraction`` of the population (at least 2 entrants).

    ``by_rank`` (successive halving): the entrants are compared by :func:`rank`, fidelity first,
    with DEAP's own draw of the entrants.
    """
    size = min(max(2, round(fraction * len(population))), len(population))
    if not by_rank:
        return tools.selTournament(population, k, tournsize=size)
    return [max(tools.selRandom(population, size), key=rank) for _ in range(k)]


def select_best(individuals: list, k: int, by_rank: bool = False) -> list:
    """DEAP's ``selBest``; ``by_rank``: by :func:`rank`, fidelity first."""
    return sorted(individuals, key=rank, reverse=True)[:k] if by_rank else tools.selBest(individuals, k)


def promoted_count(candidates: int, promote: float) -> int:
    """How many of a rung's ``candidates`` move on to the next fidelity: ``ceil(promote × candidates)``
    (at least one of a non-empty rung, so every generation's best reaches the full proxy)."""
    return max(1, math.ceil(promote * candidates - 1e-9)) if candidates else 0


def promotions(scored: list[tuple[int, float]], promote: float) -> list[int]:
    """The slots of ``scored`` ``(slot, fitness)`` pairs (one rung of one generation) that move on, in slot
    order: the best :func:`promoted_count`, ties to the earlier slot."""
    best = sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:promoted_count(len(scored), promote)]
    return sorted(slot for slot, _ in best)


def generation_cost(children: int, fidelities: list[float], promote: float) -> float:
    """The budget (in full proxy trainings) that ``children`` trained children cost through every rung."""
    cost, count = 0.0, children
    for fidelity in fidelities:
        cost += count * fidelity
        count = promoted_count(count, promote)
    return cost


def evaluation_place(key: tuple[int, int]) -> str:
    """``(rung, slot)`` in words: "slot 3", or "slot 3 at rung 1" with successive halving."""
    rung, slot = key
    return f"slot {slot}" + (f" at rung {rung}" if rung else "")


def _in_slot_order(order: list[int], results: Iterable[T]) -> Iterator[tuple[int, T]]:
    """``(slot, result)`` in slot order, from results arriving in ``order``, each as soon as it can."""
    waiting: dict[int, T] = {}
    next_slot = 0
    for slot, result in zip(order, results):
        waiting[slot] = result
        while next_slot in waiting:
            yield next_slot, waiting.pop(next_slot)
            next_slot += 1


class Search:
    """One search's evolution state: population, hall of fame, logbook, caches, counters, random state.

    ``recorder`` is told of every evaluation and generation; ``mapper`` runs the jobs.
    """

    def __init__(self, config: SearchConfig, mapper: Backend, recorder: SearchRecorder):
        self.config = config
        self.config_dict = config.to_dict()
        self.layout = dict(config.branches)
        self.task_info: TaskInfo = task_info(config.task)  # what the task is; its data stays with the workers
        self.mapper = mapper
        self.recorder = recorder
        self.toolbox = base.Toolbox()
        self.toolbox.register("map", mapper)
        self.fidelities = [float(f) for f in config.fidelities]
        self.multi_fidelity = len(self.fidelities) > 1
        # With successive halving, selection compares the fidelity first: scores of different rungs
        # are not comparable, and one measured further along is the better-founded.
        self.toolbox.register("select", select_tournament, fraction=config.tournament_fraction,
                              by_rank=self.multi_fidelity)
        self.toolbox.register("select_best", select_best, by_rank=self.multi_fidelity)
        self.hall_of_fame = tools.HallOfFame(config.hall_of_fame_size, similar=same_formulas)
        self.logbook = tools.Logbook()
        self.stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        self.stats.register("best", max)
        self.stats.register("median", statistics.median)
        self.stats.register("mean", lambda v: float(np.mean(v)))
        self.cache = EquivalenceCache()
        self.funnel = Funnel(breeding_stage_names(config))
        self.population: list[Individual] = []
        self.generation = 0
        self.evaluations = 0          # proxy trainings done
        self.spent = 0.0              # the budget they used: a training at fidelity f costs f
        self.rung_counts = [0] * len(self.fidelities)  # proxy trainings at each fidelity
        self.cache_fidelity: dict = {}  # signature -> fidelity of its cached fitness, where below 1
        self.evaluation_lines = 0     # lines of evaluations.jsonl covered by the checkpoint
        self.children = 0             # offspring made (trained or reused)
        self.reused = 0
        self.dropped = 0              # slots whose breeding found no child within max_breed_tries
        self.idle_generations = 0
        self.elapsed_s = 0.0
        self.train_s = 0.0
        self.breed_s = 0.0
        self.baseline_fitness: dict[str, float] = {}
        self.baselines_time_limited: list[str] = []  # baselines whose proxy training hit its time limit
        self.workers: list[WorkerInfo] = []  # who answered the warm-up: host, device (for the record)
        # (rung, slot) -> the line of an evaluation that finished after the checkpoint (reused when
        # the generation makes it again)
        self.recovered: dict[tuple[int, int], JsonlLine] = {}
        self._generation_start = time.perf_counter()
        self._clock = time.perf_counter()
        random.seed(config.seed)

    # -- budget ----------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_s + time.perf_counter() - self._clock

    def budget_left(self) -> bool:
        cfg = self.config
        if self.spent >= cfg.max_evaluations - BUDGET_SLACK or self.idle_generations >= MAX_IDLE_GENERATIONS:
            return False
        if self.multi_fidelity and (cfg.max_evaluations - self.spent + BUDGET_SLACK
                                    < generation_cost(1, self.fidelities, cfg.promote)):
            return False  # what is left cannot take one more child through every rung
        return cfg.max_seconds is None or self.elapsed() < cfg.max_seconds

    def slots(self) -> int:
        """Offspring to make this generation (never more than the budget left affords, or the phase's with
        ``search_in_turn``; at least one)."""
        return max(1, self.affordable(self.config.offspring_per_generation))

    def affordable(self, children: int) -> int:
        """The most children, up to ``children``, whose trainings through every rung fit in
        :meth:`evaluations_left` (:func:`generation_cost`; one training each without successive halving)."""
        left = self.evaluations_left() + BUDGET_SLACK
        if not self.multi_fidelity:
            return max(0, min(children, math.floor(left)))
        n = children
        while n > 0 and generation_cost(n, self.fidelities, self.config.promote) > left:
            n -= 1
        return n

    def evaluations_left(self) -> float:
        """The budget left, in full proxy trainings (:attr:`spent`), or with ``search_in_turn`` in the
        current phase."""
        end = self.config.max_evaluations
        if self.config.search_in_turn:
            end = min(end, self.config.phase_end(self.phase()))
        return end - self.spent

    # -- phases (search_in_turn) -----------------------------------------------------------
    def phase(self) -> int | None:
        """With ``search_in_turn``, the current phase (index into ``config.searched``): a function of the
        evaluation count (:meth:`SearchConfig.phase_at`); otherwise ``None``."""
        return self.config.phase_at(self.spent) if self.config.search_in_turn else None

    def phase_branches(self) -> list[str]:
        """The branches children may vary now: the current phase's, or every searched branch."""
        phase = self.phase()
        return list(self.config.searched) if phase is None else [self.config.searched[phase]]

    def phase_row(self) -> dict:
        """What the logbook row says of the phase: ``{"phase": branch}`` with ``search_in_turn``, else nothing."""
        phase = self.phase()
        return {} if phase is None else {"phase": self.config.searched[phase]}

    def phase_starts(self) -> bool:
        """Whether the generation about to run is the first of a phase after another (``search_in_turn``).

        Read from the logbook, which the checkpoint keeps: on resume the answer is the same.
        """
        phase = self.phase()
        return (phase is not None and len(self.logbook) > 0
                and self.logbook[-1].get("phase") != self.config.searched[phase])

    def best_kept(self) -> Individual:
        """A copy of the best genome trained so far, with its score (for re-seeding the population)."""
        best = self.best()
        if best is None:
            raise GpLossError("no genome has been trained yet to start the next phase from")
        return individual_from_dict(self.layout, individual_to_dict(self.layout, best))

    # -- children ----------------------------------------------------------------
    def start_individual(self) -> Individual:
        """The start genome (CSE-Autoloss scheme), with its gradient-equivalence signature."""
        ind = individual_from_formulas(self.layout, self.config.start)
        ind.generation = self.generation
        # Workers judge it: the parent builds no filter samples of its own.
        job = SignatureJob(self.config_dict, self.config.start, branches=list(self.config.searched))
        (rejected,) = self.toolbox.map(jobs.start_rejections, [job])
        if rejected:
            raise GpLossError("the cse scheme evolves from its start formulas, but the filters reject "
                              + "; ".join(f"branch {name!r} ({why})" for name, why in rejected.items())
                              + ": give a start formula that passes `gp-loss check`")
        (signature,) = self.toolbox.map(jobs.signature_of, [job])
        ind.signature = signature
        return ind

    def warm_start(self) -> tuple[list[Individual], list[Individual]]:
        """The baselines that join the initial population with ``warm_start = "baselines"``:
        ``(known, given)``.

        DiscoPOP (Lu et al., NeurIPS 2024) starts its archive from the known losses; so does this,
        with the run's baselines that are formulas of this layout's kinds (a detector's own loss code
        is none). A baseline gives the searched branches their formulas; the others keep their start
        formulas. Where that is the baseline itself, its proxy fitness is known (it was trained on the
        same seed before the search): ``known`` members join with that score and cost no budget. They
        enter the hall of fame like any trained loss, so a search that finds nothing better returns
        the best baseline as its best rather than a worse loss (the final table marks such a row).
        The others (``given``) are trained as generation 0's first children. A baseline the filters reject, or one equal to the cse scheme's
        start, is left out. Each member's signature is set and, for ``known``, cached with its score,
        so a child equivalent to a baseline reuses its score instead of training.
        """
        if self.config.warm_start != "baselines":
            return [], []
        texts, names, searched = self.baseline_texts(), self.baseline_names(), set(self.config.searched)
        start = dict(self.config.start)
        genomes: list[tuple[str, dict[str, str]]] = []
        is_start = []
        for name in names:
            formulas = {b: texts[name][b] if b in searched or b not in start else start[b] for b in self.layout}
            try:
                individual_from_formulas(self.layout, formulas)
            except (GpLossError, KeyError):  # not a formula of this layout (e.g. a detector's own loss code)
                continue
            if self.config.scheme == "cse" and formulas == start:
                is_start.append(name)
            elif formulas not in [f for _, f in genomes]:
                genomes.append((name, formulas))
        if not genomes:
            print(safe_line("warm start: " + (f"{', '.join(is_start)} is the start genome already" if is_start else
                                              f"no baseline of {', '.join(names) or 'this run'} is a formula of "
                                              f"the searched branches") + "; no other baseline joins the population"))
            return [], []
        sig_jobs = [SignatureJob(self.config_dict, formulas, branches=list(self.config.searched))
                    for _, formulas in genomes]
        rejections = self.toolbox.map(jobs.start_rejections, sig_jobs)
        signatures = self.toolbox.map(jobs.signature_of, sig_jobs)
        known, given, left_out = [], [], []
        for (name, formulas), rejected, signature in zip(genomes, rejections, signatures):
            if rejected:
                left_out.append(f"{name} ({'; '.join(rejected.values())})")
                continue
            ind = individual_from_formulas(self.layout, formulas)
            ind.generation, ind.signature = self.generation, freeze(signature)
            if formulas == texts[name] and name in self.baseline_fitness:
                ind.fitness.values, ind.reused = (self.baseline_fitness[name],), True
                self.cache.store(ind.signature, self.baseline_fitness[name])
                known.append((name, ind))
            else:
                given.append((name, ind))
        self.hall_of_fame.update([ind for _, ind in known])
        print(safe_line("warm start: " + ", ".join(
            [f"{name} (proxy fitness known)" for name, _ in known] + [f"{name} (trained)" for name, _ in given]
            + [f"not {item}: the filters reject it" for item in left_out])))
        return [ind for _, ind in known], [ind for _, ind in given]

    def make_children(self, plan: list[tuple[Mode, list[Individual]]],
                      branches: list[str] | None = None) -> list[Individual]:
        """One child per ``(mode, parents)`` of ``plan``, bred through the filters and scored.

        Modes (:mod:`~gp_loss.evolution.variation`): ``"init"`` (no parents),
        ``"aging"`` (one), ``"pair"`` (two), ``"given"`` (the parent itself, with
        its ``signature`` set: see :meth:`start_individual`). ``branches``: those the
        children may differ in (default: every searched branch; see :meth:`phase_branches`).
        All children are made in one ``toolbox.map`` (:func:`jobs.make_child`), so
        no worker waits for a breeding round to end. A child gradient-equivalent to
        a loss evaluated before this generation, or to a given genome, reuses its
        score without training. One equivalent to a bred sibling of an earlier slot
        takes that sibling's score, as if reused; it is trained (and the training
        discarded) only where another worker trained the sibling and it could not know.
        Jobs are handed out longest first; children are recorded in slot order,
        whatever order the workers finish in.
        """
        given = sum(mode == GIVEN for mode, _ in plan)
        if any(mode != GIVEN for mode, _ in plan[:given]):
            raise ValueError("given genomes must come first in the plan: bred children equivalent to "
                             "them reuse their scores, which must be recorded first")
        known = (frozenset(sig for sig, _ in self.cache.items())
                 | {parents[0].signature for mode, parents in plan if mode == GIVEN})
        plan_id = f"{os.getpid()}:{next(_PLAN_IDS)}"
        branches = list(self.config.searched if branches is None else branches)
        job_list = [ChildJob(breed=BreedJob(config=self.config_dict, mode=mode,
                                            seed=slot_seed(self.config.seed, self.generation, slot),
                                            parents=[formulas_of(self.layout, p) for p in parents],
                                            branches=branches),
                             known=known, train_seed=self.config.seed,
                             recorded=(self.recovered[(0, slot)].record["formulas"] if (0, slot) in self.recovered
                                       else None),
                             plan=plan_id, slot=slot, fidelity=self.fidelities[0])
                    for slot, (mode, parents) in enumerate(plan)]
        # Longest jobs first (the variation is known from the seed), then record in slot order.
        order = sorted(range(len(job_list)), key=lambda i: jobs.cost_rank(job_list[i], self.config))
        children, trained = [], []  # trained: (slot, child) at the first rung
        for slot, result in _in_slot_order(order, self.toolbox.map(jobs.make_child, [job_list[i] for i in order])):
            bred = result.bred
            self.funnel.merge(bred.funnel)
            self.breed_s += bred.seconds
            if result.outcome == "dropped":
                self.dropped += 1
                continue
            child = individual_from_formulas(self.layout, bred.formulas)
            child.generation, child.signature = self.generation, freeze(bred.signature)
            self.children += 1
            if child.signature in self.cache:  # reused in its job, or a twin of an earlier sibling
                child.fitness.values, child.reused = (self.cache.lookup(child.signature),), True
                child.fidelity = self.cache_fidelity.get(child.signature, 1.0)
                self.reused += 1
            else:
                self._count((0, slot), child, None if result.outcome == "recorded" else result.trained)
                trained.append((slot, child))
            children.append(child)
        if not children and not self.population:
            raise GpLossError(
                f"no child passed the filters in generation {self.generation}: each of {len(plan)} slot(s) "
                f"tried max_breed_tries ({self.config.max_breed_tries}) candidates. Raise max_breed_tries, "
                f"loosen filter_time_limit_s, or search fewer branches at once (each branch must pass); "
                f"then start a new run with another --out")
        for rung in range(1, len(self.fidelities)):  # successive halving within the generation
            trained = self._promote(trained, rung)
        if self.multi_fidelity:  # a twin takes its sibling's score at the rung the sibling reached
            for child in children:
                if child.reused:
                    child.fitness.values = (self.cache.peek(child.signature),)
                    child.fidelity = self.cache_fidelity.get(child.signature, 1.0)
        self.hall_of_fame.update([child for _, child in trained if child.fidelity == 1.0])
        self.idle_generations = 0 if trained else self.idle_generations + 1
        if self.recovered:  # records of this generation that it did not make again
            self.recorder.set_aside([(line, f"{evaluation_place(key)} of generation {self.generation} was not made "
                                            f"again with these formulas on resume")
                                     for key, line in sorted(self.recovered.items())])
            self.recovered = {}
        return children

    def _promote(self, rung_below: list[tuple[int, Individual]], rung: int) -> list[tuple[int, Individual]]:
        """Successive halving's step (Li et al., JMLR 2018): the best :func:`promoted_count` of the
        ``(slot, child)`` pairs trained at the rung below (compared only with each other) train at
        ``fidelities[rung]``, in one parallel map; the promoted pairs, in slot order.

        A training recorded before an interruption (same slot, rung and formulas) is not redone.
        """
        chosen = set(promotions([(slot, child.fitness.values[0]) for slot, child in rung_below
                                 if child.fidelity == self.fidelities[rung - 1]], self.config.promote))
        promoted = [(slot, child) for slot, child in rung_below if slot in chosen]
        to_train = [(slot, child) for slot, child in promoted if not self._recorded((rung, slot), child)]
        outcomes = self.toolbox.map(jobs.evaluate, [
            TrainJob(config=self.config_dict, formulas=formulas_of(self.layout, child), seed=self.config.seed,
                     fidelity=self.fidelities[rung]) for _, child in to_train])
        trained = dict(zip((slot for slot, _ in to_train), outcomes))
        for slot, child in promoted:
            self._count((rung, slot), child, trained.get(slot))
        return promoted

    def _recorded(self, key: tuple[int, int], child: Individual) -> bool:
        """Whether the training ``key`` = ``(rung, slot)`` of ``child`` finished before an interruption."""
        line = self.recovered.get(key)
        return line is not None and line.record["formulas"] == formulas_of(self.layout, child)

    def _count(self, key: tuple[int, int], child: Individual, trained: TrainOutcome | None) -> None:
        """Score ``child`` from its training ``key`` = ``(rung, slot)``, or, with ``trained`` ``None``,
        from the record of it kept across an interruption; and record it.

        Kept records stand in ``evaluations.jsonl`` in (rung, slot) order and are counted there as
        they are reused. One that the generation passed over is set aside. A child trained anew must
        be written after every kept record still waiting, so those are set aside (copied) first; one
        of them that is reused later is then written again at its turn.
        """
        rung, slot = key
        passed = sorted(k for k in self.recovered if k < key)
        if passed:
            self.recorder.set_aside([(self.recovered.pop(k), f"{evaluation_place(k)} of generation "
                                                             f"{self.generation} was not made again with these "
                                                             f"formulas on resume")
                                     for k in passed])
        if trained is not None and self.recovered:
            self.recorder.set_aside([(line, f"moved: generation {self.generation} went otherwise on resume "
                                            f"from {evaluation_place(key)} on; written again after its new record "
                                            f"if {evaluation_place(k)} is reused")
                                     for k, line in sorted(self.recovered.items())])
        if trained is None:
            record = self.recovered.pop(key).record
        else:
            record = evaluation_record(trained, generation=self.generation, slot=slot,
                                       evaluation=self.evaluations + 1, formulas=formulas_of(self.layout, child),
                                       signature=child.signature, fidelity=self.fidelities[rung])
        self.evaluations += 1
        self.spent += self.fidelities[rung]
        self.rung_counts[rung] += 1
        self.train_s += record["seconds"]
        child.id = record["evaluation"]
        child.fitness.values = (record["fitness"],)
        # A failed training measured nothing at its fidelity: it ranks with the lowest rung's.
        child.fidelity = self.fidelities[0] if record.get("status") in FAILED_STATUSES else self.fidelities[rung]
        self.cache.store(child.signature, record["fitness"])
        if child.fidelity < 1.0:
            self.cache_fidelity[child.signature] = child.fidelity
        else:
            self.cache_fidelity.pop(child.signature, None)
        self.recorder.evaluation(record)
        self.evaluation_lines += 1

    def prepare_workers(self, require: bool = False) -> list[WorkerInfo]:
        """Warm every worker up (task data, filter samples, the training code path); who answered.

        Rounds of two jobs per worker until every worker has answered (SCOOP
        workers may still be importing when the search starts), or no new one
        has for ``JOIN_QUIET_S``, or ``WARM_UP_S`` passed. The setup then happens
        before the first generation, where it would leave the other workers
        waiting, and outside the search's measured wall time (see
        :meth:`start_clock`), in serial runs as in parallel ones.

        Fewer workers than the backend's count (a SCOOP host down or refusing SSH, a
        Ray node that never joined: the jobs run on the others and nothing more is said) gives one
        warning line on stderr naming the count and, where the backend knows them
        (SCOOP's hostfile), the silent hosts; with ``require`` it is a :class:`GpLossError` instead,
        before any training. Parallel runs print one line per worker: host and device.
        """
        wanted = self.mapper.workers
        seen: dict[tuple[str, int], WorkerInfo] = {}
        start = last_join = time.perf_counter()
        while True:
            joined = False
            for info in self.toolbox.map(jobs.prepare, [self.config_dict] * (2 * wanted)):
                if info.key not in seen:
                    seen[info.key] = info
                    last_join, joined = time.perf_counter(), True
            now = time.perf_counter()
            if len(seen) >= wanted or now - start >= WARM_UP_S or now - last_join >= JOIN_QUIET_S:
                break
            if not joined:
                time.sleep(0.2)  # waiting for a worker still starting: no need to spin
        infos = sorted(seen.values(), key=lambda i: (i.host, i.slot if i.slot is not None else -1, i.pid))
        self.workers = infos
        if self.mapper.needs_pickle:
            for info in infos:
                slot = "" if info.slot is None else f" (slot {info.slot} of its host)"
                print(f"worker {info.pid} on {info.host}: {info.device}{slot}")
        line = missing_workers(infos, wanted, time.perf_counter() - start, self.mapper.expected_hosts(),
                               self.mapper.missing_hint())
        if line is not None:
            if require:
                raise GpLossError(f"--require-workers: {line}")
            print(f"gp-loss: warning: {line}; --require-workers makes this an error", file=sys.stderr)
        return infos

    def start_clock(self) -> None:
        """Start (or, on resume, continue) the search's wall clock: after the setup, before generation 0."""
        self._clock = self._generation_start = time.perf_counter()

    def baseline_names(self) -> list[str]:
        """The configured baselines that can train this run's genome: only those written for its branch layout."""
        options = self.task_info.make_options(self.config.task_options)
        return list(self.config.baselines) if self.layout == self.task_info.layout(options) else []

    @property
    def metric(self) -> str:
        """The name of the metric the fitness measures (a task option may choose it, e.g. ``BF1``)."""
        return self.task_info.metric_for(self.task_info.make_options(self.config.task_options))

    def baseline_texts(self) -> dict[str, dict[str, str]]:
        """Baseline name -> branch -> formula (or what trains it), for this run's task options."""
        return self.task_info.baselines_for(self.task_info.make_options(self.config.task_options))

    def evaluate_baselines(self) -> None:
        """Proxy fitness of the named baselines, for the report and the plot (not in the budget).

        A resumed search has them from its checkpoint. Baselines are trained by name (the task's
        ``baseline``): a detector's own loss code is one, and is no formula.

        Raises:
            GpLossError: every baseline's training failed (:attr:`TrainOutcome.failed`). The paper's
                losses train on any data a search can learn from, so the data or the settings are at
                fault, and a search would only compare zeros: it stops here, naming the first failure.
        """
        if self.baseline_fitness:
            return
        names = self.baseline_names()
        if not names:
            return
        texts = self.baseline_texts()
        job_list = [TrainJob(config=self.config_dict, formulas=texts[n], seed=self.config.seed, baseline=n)
                    for n in names]
        self.recorder.baselines_start(names, self.metric)
        outcomes = list(zip(names, map_reporting(
            self.mapper, jobs.evaluate, job_list,
            lambda index, outcome: self.recorder.baseline_trained(names[index], outcome))))
        failed = [(name, outcome) for name, outcome in outcomes if outcome.failed]
        if failed and len(failed) == len(outcomes):
            name, first = failed[0]
            if all(o.status == TOO_SLOW for _, o in failed):
                fix = (f"each ran past eval_time_limit_s ({self.config.eval_time_limit_s:g} s): raise it, or "
                       f"shorten the proxy training")
            else:
                fix = (f"the data or the settings cannot be trained: check the data and the task options "
                       f"(`gp-loss evaluate --task {self.config.task} --loss {name}` with the same options "
                       f"trains it alone)")
            raise GpLossError(f"every baseline training failed ({name}: {first.status}"
                              + (f": {first.reason}" if first.reason else "") + f"); {fix}")
        for name, outcome in outcomes:
            self.baseline_fitness[name] = outcome.score
        self.baselines_time_limited = [name for name, outcome in outcomes if outcome.hit_time_limit]

    def load_dependence(self) -> str | None:
        """One line if a time limit stopped a proxy training (baselines included) or rejected a candidate:
        then the results depend on the machine's load (:func:`gp_loss.timeout.load_dependence`)."""
        limited = [{"hit_time_limit": True}] * len(self.baselines_time_limited)
        return load_dependence(self.recorder.read_evaluations() + limited, self.funnel.too_slow)

    # -- end of a generation ---------------------------------------------------------
    def end_generation(self, **row) -> None:
        """Log the generation and hand it to the recorder (run files, checkpoint, summary line).

        ``row``: more columns of the logbook row, after ``gen`` (e.g. :meth:`phase_row`).
        """
        wall = time.perf_counter() - self._generation_start
        # Statistics of the fitness measured with the whole proxy (every member's, without successive halving).
        whole = [ind for ind in self.population if ind.fidelity == 1.0]
        record = self.stats.compile(whole) if whole else {"best": None, "median": None, "mean": None}
        best = self.best()
        if self.multi_fidelity:  # proxy trainings so far at each fidelity, and the budget they used
            row = {**row, **{f"trained_at_{f:g}": n for f, n in zip(self.fidelities, self.rung_counts)},
                   "spent": round(self.spent, 6)}
        self.logbook.record(
            gen=self.generation, **row, evaluations=self.evaluations, children=self.children, reused=self.reused,
            dropped=self.dropped, population=len(self.population),
            hof_best=best.fitness.values[0] if best else None, **record,
            candidates=self.funnel.candidates, filtered=self.funnel.candidates - self.funnel.passed,
            breed_s=round(self.breed_s, 3), train_s=round(self.train_s, 3),
            wall_s=round(self.elapsed(), 3), generation_s=round(wall, 3))
        self.generation += 1
        self.recorder.generation(self)
        self._generation_start = time.perf_counter()

    def best(self) -> Individual | None:
        """The best loss trained so far (``None`` before the first)."""
        return self.hall_of_fame[0] if len(self.hall_of_fame) else None

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the search needs to continue exactly where it is (JSON-able)."""
        version, internal, gauss = random.getstate()
        return {
            "version": STATE_VERSION, "config": self.config_dict, "config_sha256": config_digest(self.config_dict),
            "generation": self.generation, "evaluations": self.evaluations, "spent": self.spent,
            "rung_counts": self.rung_counts,
            "cache_fidelity": [[list(map(list, sig)), f] for sig, f in self.cache_fidelity.items()],
            "evaluation_lines": self.evaluation_lines, "children": self.children, "reused": self.reused,
            "dropped": self.dropped, "idle_generations": self.idle_generations,
            "elapsed_s": self.elapsed(), "train_s": self.train_s, "breed_s": self.breed_s,
            "random_state": [version, list(internal), gauss],
            "population": [individual_to_dict(self.layout, i) for i in self.population],
            "hall_of_fame": [individual_to_dict(self.layout, i) for i in self.hall_of_fame],
            "cache": [[list(map(list, sig)), fit] for sig, fit in self.cache.items()],
            "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
            "funnel": self.funnel.to_dict(), "logbook": list(self.logbook),
            "baseline_fitness": self.baseline_fitness, "baselines_time_limited": self.baselines_time_limited,
        }

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s ``state``."""
        if state.get("version") != STATE_VERSION:
            raise GpLossError(f"the checkpoint was written by another version of gp-loss (state version "
                              f"{state.get('version')}, this one reads {STATE_VERSION}), so it cannot be "
                              f"resumed exactly: start a new run with another --out")
        for key in ("generation", "evaluations", "evaluation_lines", "children", "reused", "dropped",
                    "idle_generations", "elapsed_s", "train_s", "breed_s", "baseline_fitness"):
            setattr(self, key, state[key])
        self.baselines_time_limited = list(state.get("baselines_time_limited", []))
        self.spent, self.rung_counts = state["spent"], list(state["rung_counts"])
        self.cache_fidelity = {freeze(sig): f for sig, f in state["cache_fidelity"]}
        version, internal, gauss = state["random_state"]
        random.setstate((version, tuple(internal), gauss))
        self.population = [individual_from_dict(self.layout, d) for d in state["population"]]
        # Restore the members in their stored order: HallOfFame.insert would put each
        # one before its equals and reverse ties. (DEAP keeps items best-first, keys ascending.)
        members = [individual_from_dict(self.layout, d) for d in state["hall_of_fame"]]
        self.hall_of_fame.items = members
        self.hall_of_fame.keys = [m.fitness for m in reversed(members)]
        for sig, fit in state["cache"]:
            self.cache.store(freeze(sig), fit)
        self.cache.hits, self.cache.misses = state["cache_hits"], state["cache_misses"]
        self.funnel = Funnel.from_dict(state["funnel"])
        for row in state["logbook"]:
            self.logbook.record(**row)
        self._clock = time.perf_counter()

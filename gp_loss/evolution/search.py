"""The state of one search and the steps the evolution loops are written in.

:mod:`gp_loss.evolution.algorithms` reads top to bottom like DEAP's
``algorithms.py``; the bookkeeping it calls lives here: making children in
parallel (each bred through the filters, then trained unless the
gradient-equivalence cache knows its score), the hall of fame, the logbook, the run
directory and the checkpoint.

Reproducibility: selection draws from the global ``random`` (DEAP's
operators do), seeded from ``config.seed`` and saved in the checkpoint;
every child's job gets a seed derived from ``(seed, generation, slot)``;
every proxy training uses ``config.seed`` (common random numbers, so
losses are compared on the same initialisation and data order). None of it
depends on which worker runs a job.
"""
from __future__ import annotations

import itertools
import os
import random
import statistics
import sys
import time
from typing import Iterable, Iterator

import numpy as np
from deap import base, tools
from tqdm import tqdm

from gp_loss.evolution import jobs
from gp_loss.evolution.checkpoint import save_checkpoint
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import (Individual, formulas_of, freeze, genome_of, individual_from_dict,
                                          individual_from_formulas, individual_to_dict, same_formulas)
from gp_loss.evolution.parallel import Mapper
from gp_loss.evolution.plot import plot_fitness
from gp_loss.evolution.run_dir import RunDir
from gp_loss.export import export_torch
from gp_loss.filters.equivalence import EquivalenceCache
from gp_loss.filters.funnel import Funnel
from gp_loss.language.genome import Branch, Genome

STATE_VERSION = 1
# Stop when this many generations in a row trained nothing new (all offspring reused).
MAX_IDLE_GENERATIONS = 50
PLOT_EVERY_S = 120.0
_PLAN_IDS = itertools.count()  # ids of make_children calls, unique in this process
WARM_UP_S = 60.0


def slot_seed(seed: int, generation: int, slot: int) -> int:
    """The seed of one breeding job: independent streams per (run, generation, slot)."""
    return int(np.random.SeedSequence([seed, generation, slot]).generate_state(1)[0])


def select_tournament(population: list, k: int, fraction: float) -> list:
    """DEAP tournament selection over ``fraction`` of the population (at least 2 entrants)."""
    size = max(2, round(fraction * len(population)))
    return tools.selTournament(population, k, tournsize=min(size, len(population)))


def _in_slot_order(order: list[int], results: Iterable[dict]) -> Iterator[tuple[int, dict]]:
    """``(slot, result)`` in slot order, from results arriving in ``order``, each as soon as it can."""
    waiting: dict[int, dict] = {}
    next_slot = 0
    for slot, result in zip(order, results):
        waiting[slot] = result
        while next_slot in waiting:
            yield next_slot, waiting.pop(next_slot)
            next_slot += 1


class Search:
    """One search: configuration, population, hall of fame, logbook, caches, run directory."""

    def __init__(self, config: SearchConfig, run: RunDir, mapper: Mapper, progress: bool | None = None):
        self.config = config
        self.config_dict = config.to_dict()
        self.layout = dict(config.branches)
        self.run = run
        self.mapper = mapper
        self.toolbox = base.Toolbox()
        self.toolbox.register("map", mapper)
        self.toolbox.register("select", select_tournament, fraction=config.tournament_fraction)
        self.hall_of_fame = tools.HallOfFame(config.hall_of_fame_size, similar=same_formulas)
        self.logbook = tools.Logbook()
        self.stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        self.stats.register("best", max)
        self.stats.register("median", statistics.median)
        self.stats.register("mean", lambda v: float(np.mean(v)))
        self.cache = EquivalenceCache()
        self.funnel = Funnel([stage.name for stage in jobs.context_for(self.config_dict).pipeline.stages])
        self.population: list[Individual] = []
        self.generation = 0
        self.evaluations = 0          # proxy trainings done
        self.evaluation_lines = 0     # lines of evaluations.jsonl covered by the checkpoint
        self.children = 0             # offspring made (trained or reused)
        self.reused = 0
        self.dropped = 0              # slots whose breeding found no child within max_breed_tries
        self.idle_generations = 0
        self.elapsed_s = 0.0
        self.train_s = 0.0
        self.breed_s = 0.0
        self.baseline_fitness: dict[str, float] = {}
        self.recovered: dict[int, dict] = {}  # slot -> evaluation finished after the checkpoint
        self._generation_start = time.perf_counter()
        self._clock = time.perf_counter()
        self._last_plot = float("-inf")
        random.seed(config.seed)
        self.bar = tqdm(total=config.max_evaluations, unit="eval", desc="search", disable=progress is False
                        or (progress is None and not sys.stderr.isatty()), file=sys.stderr)

    # -- budget ----------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_s + time.perf_counter() - self._clock

    def budget_left(self) -> bool:
        cfg = self.config
        if self.evaluations >= cfg.max_evaluations or self.idle_generations >= MAX_IDLE_GENERATIONS:
            return False
        return cfg.max_seconds is None or self.elapsed() < cfg.max_seconds

    def slots(self) -> int:
        """Offspring to make this generation (never more than the evaluations left)."""
        return max(1, min(self.config.offspring_per_generation, self.config.max_evaluations - self.evaluations))

    # -- children ----------------------------------------------------------------
    def start_individual(self) -> Individual:
        """The start genome (cse scheme), with its gradient-equivalence signature."""
        ind = individual_from_formulas(self.layout, self.config.start)
        ctx = jobs.context_for(self.config_dict)
        ind.generation = self.generation
        ind.signature = tuple(ctx.signature(kind, tree) for kind, tree in zip(self.layout.values(), ind))
        return ind

    def make_children(self, plan: list[tuple[str, list[Individual]]]) -> list[Individual]:
        """One child per ``(mode, parents)`` of ``plan``, bred through the filters and scored.

        Modes: ``"init"`` (no parents), ``"zero"`` (one), ``"cse"`` (two), ``"given"``
        (the parent itself, with its ``signature`` set: see :meth:`start_individual`).
        All children are made in one ``toolbox.map`` (:func:`jobs.make_child`), so
        no worker waits for a breeding round to end. A child gradient-equivalent to
        a loss evaluated before this generation, or to a given genome, reuses its
        score without training. One equivalent to a bred sibling of an earlier slot
        takes that sibling's score, as if reused; it is trained (and the training
        discarded) only where another worker trained the sibling and it could not know.
        Jobs are handed out longest first; children are recorded in slot order,
        whatever order the workers finish in.
        """
        given = sum(mode == "given" for mode, _ in plan)
        if any(mode != "given" for mode, _ in plan[:given]):
            raise ValueError("given genomes must come first in the plan: bred children equivalent to "
                             "them reuse their scores, which must be recorded first")
        known = frozenset(sig for sig, _ in self.cache.items()) | {ps[0].signature for mode, ps in plan if mode == "given"}
        plan_id = f"{os.getpid()}:{next(_PLAN_IDS)}"
        job_list = [{"config": self.config_dict, "seed": slot_seed(self.config.seed, self.generation, slot),
                     "mode": mode, "parents": [formulas_of(self.layout, p) for p in parents],
                     "known": known, "train_seed": self.config.seed,
                     "recorded": self.recovered.get(slot, {}).get("formulas"), "plan": plan_id, "slot": slot}
                    for slot, (mode, parents) in enumerate(plan)]
        # Longest jobs first (the variation is known from the seed), then record in slot order.
        order = sorted(range(len(job_list)), key=lambda i: jobs.cost_rank(job_list[i], self.config))
        children, trained = [], []
        for slot, result in _in_slot_order(order, self.toolbox.map(jobs.make_child, [job_list[i] for i in order])):
            self.funnel.merge(Funnel.from_dict(result["funnel"]))
            self.breed_s += result["seconds"]
            if result["outcome"] == "dropped":
                self.dropped += 1
                continue
            child = individual_from_formulas(self.layout, result["formulas"])
            child.generation, child.signature = self.generation, freeze(result["signature"])
            self.children += 1
            if child.signature in self.cache:  # reused in its job, or a twin of an earlier sibling
                child.fitness.values, child.reused = (self.cache.lookup(child.signature),), True
                self.reused += 1
            else:
                self._record_training(slot, child, result)
                trained.append(child)
            children.append(child)
        self.hall_of_fame.update(trained)
        self.idle_generations = 0 if trained else self.idle_generations + 1
        return children

    def _record_training(self, slot: int, child: Individual, result: dict) -> None:
        """Score ``child`` from its training (or the record of it kept across an interruption)."""
        if result["outcome"] == "recorded":
            record = self.recovered.pop(slot)
        else:
            outcome = result["trained"]
            record = {"generation": self.generation, "slot": slot,
                      "formulas": formulas_of(self.layout, child), "fitness": outcome["score"],
                      "status": outcome["status"], "reason": outcome["reason"], "steps": outcome["steps"],
                      "seconds": outcome["seconds"], "signature": child.signature,
                      "evaluation": self.evaluations + 1}
        self.evaluations += 1
        self.train_s += record["seconds"]
        child.id = record["evaluation"]
        child.fitness.values = (record["fitness"],)
        self.cache.store(child.signature, record["fitness"])
        self.run.append_evaluation(record)
        self.evaluation_lines += 1
        self.bar.update(1)

    def prepare_workers(self) -> None:
        """Warm every worker up (task data, filter samples, the training code path).

        Rounds of two jobs per worker until every worker has answered (SCOOP
        workers may still be importing when the search starts) or
        ``WARM_UP_S`` passed. The setup then happens before the first
        generation, where it would leave the other workers waiting, and
        outside the search's measured wall time (see :meth:`start_clock`), in
        serial runs as in parallel ones.
        """
        seen: set[int] = set()
        deadline = time.perf_counter() + WARM_UP_S
        while len(seen) < self.mapper.workers and time.perf_counter() < deadline:
            seen.update(self.toolbox.map(jobs.prepare, [self.config_dict] * (2 * self.mapper.workers)))

    def start_clock(self) -> None:
        """Start (or, on resume, continue) the search's wall clock: after the setup, before generation 0.

        The plot is first drawn ``PLOT_EVERY_S`` after this, then as often, and at the end.
        """
        self._clock = self._generation_start = self._last_plot = time.perf_counter()

    def evaluate_baselines(self) -> None:
        """Proxy fitness of the named baselines, for the report and the plot (not in the budget).

        Only baselines written for this run's branch layout can train its genome.
        """
        if self.baseline_fitness:
            return
        task = self.task
        names = [n for n in self.config.baselines if self.layout == task.branches]
        job_list = [{"config": self.config_dict, "formulas": task.baselines[n], "seed": self.config.seed}
                    for n in names]
        for name, outcome in zip(names, self.toolbox.map(jobs.evaluate, job_list)):
            self.baseline_fitness[name] = outcome["score"]
        self.run.write_json(self.run.baselines, self.baseline_fitness)

    # -- end of a generation ---------------------------------------------------------
    def end_generation(self) -> None:
        """Log, write the run directory's files and the checkpoint; print one summary line."""
        now = time.perf_counter()
        wall = now - self._generation_start
        record = self.stats.compile(self.population)
        best = self.hall_of_fame[0] if len(self.hall_of_fame) else None
        self.logbook.record(
            gen=self.generation, evaluations=self.evaluations, children=self.children, reused=self.reused,
            dropped=self.dropped, population=len(self.population),
            hof_best=best.fitness.values[0] if best else None, **record,
            candidates=self.funnel.candidates, filtered=self.funnel.candidates - self.funnel.passed,
            breed_s=round(self.breed_s, 3), train_s=round(self.train_s, 3),
            wall_s=round(self.elapsed(), 3), generation_s=round(wall, 3))
        self.generation += 1
        # The plot costs ~0.3 s, which every worker waits for: redraw it at most every
        # PLOT_EVERY_S (and at the end).
        self.write_results(plot=now - self._last_plot >= PLOT_EVERY_S)
        save_checkpoint(self.run.path, self.state_dict())
        line = (f"gen {self.generation - 1:>3} | evals {self.evaluations}/{self.config.max_evaluations} "
                f"| reused {self.reused} | candidates {self.funnel.candidates} "
                f"({100 * self.funnel.rejection_rate:.1f}% filtered) | {self.elapsed():.0f} s")
        if best is not None:
            line += f" | best {best.fitness.values[0]:.4f} " + " ".join(
                f"{n}={f}" for n, f in formulas_of(self.layout, best).items())
        tqdm.write(line, file=sys.stdout)
        self._generation_start = time.perf_counter()

    def hall_of_fame_genome(self) -> Genome | None:
        """All hall-of-fame members as one genome, branches named ``top{rank}_{branch}``."""
        if not len(self.hall_of_fame):
            return None
        branches = []
        for rank, ind in enumerate(self.hall_of_fame, 1):
            for b in genome_of(self.layout, ind):
                branches.append(Branch(f"top{rank}_{b.name}", b.kind, b.tree))
        return Genome(branches)

    def write_results(self, plot: bool = True) -> None:
        """Logbook, hall of fame (JSON and PyTorch) and, with ``plot``, the fitness plot."""
        from gp_loss.export import to_latex
        self.run.write_logbook(list(self.logbook))
        rows = []
        for rank, ind in enumerate(self.hall_of_fame, 1):
            genome = genome_of(self.layout, ind)
            rows.append({"rank": rank, "fitness": ind.fitness.values[0], "evaluation": ind.id,
                         "generation": ind.generation, "formulas": genome.formulas(),
                         "kinds": dict(self.layout), "latex": {b.name: to_latex(b.kind, b.tree) for b in genome}})
        self.run.write_json(self.run.hall_of_fame_json, {"metric": f"validation {self._metric()}",
                                                         "task": self.config.task, "hall_of_fame": rows})
        genome = self.hall_of_fame_genome()
        if genome is not None:
            from gp_loss.io import write_text_atomic
            write_text_atomic(self.run.hall_of_fame_py, export_torch(
                genome, header=f"Hall of fame of the {self.config.task} search in {self.run.path} "
                               f"(top1 is the best by validation {self._metric()})."))
        if plot:
            plot_fitness(self.run.read_evaluations(), self.baseline_fitness, self.run.plot, self._metric())
            self._last_plot = time.perf_counter()

    @property
    def task(self):
        """The task, built once per process (the same object the serial map's jobs use)."""
        return jobs.context_for(self.config_dict).task

    def _metric(self) -> str:
        return self.task.metric

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        version, internal, gauss = random.getstate()
        return {
            "version": STATE_VERSION, "generation": self.generation, "evaluations": self.evaluations,
            "evaluation_lines": self.evaluation_lines, "children": self.children, "reused": self.reused,
            "dropped": self.dropped, "idle_generations": self.idle_generations,
            "elapsed_s": self.elapsed(), "train_s": self.train_s, "breed_s": self.breed_s,
            "random_state": [version, list(internal), gauss],
            "population": [individual_to_dict(self.layout, i) for i in self.population],
            "hall_of_fame": [individual_to_dict(self.layout, i) for i in self.hall_of_fame],
            "cache": [[list(map(list, sig)), fit] for sig, fit in self.cache.items()],
            "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
            "funnel": self.funnel.to_dict(), "logbook": list(self.logbook),
            "baseline_fitness": self.baseline_fitness,
        }

    def load_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            from gp_loss.errors import GpLossError
            raise GpLossError(f"checkpoint version {state.get('version')} is not {STATE_VERSION}")
        for key in ("generation", "evaluations", "evaluation_lines", "children", "reused", "dropped",
                    "idle_generations", "elapsed_s", "train_s", "breed_s", "baseline_fitness"):
            setattr(self, key, state[key])
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
        self.bar.update(self.evaluations)

"""What a worker process keeps between jobs, and how it is warmed up.

Each worker process keeps one :class:`WorkerContext` per configuration: the
filter pipeline (its random network and samples) and the task (its data)
are built once per process, not once per job.
"""
from __future__ import annotations

import atexit
import gc
import json

import torch
from deap import gp

from primitives import get_kind

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.mutation import OffspringConfig
from gp_loss.filters.base import Candidate
from gp_loss.filters.equivalence import EquivalenceStage
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.runtime.device import resolve_device, set_deterministic, share_gpu_memory
from gp_loss.runtime.backend import gpu_sharers
from gp_loss.tasks import Task, make_task


def breeding_stages(config: SearchConfig) -> list:
    """The filter stages a child is bred through, in their order (equivalence is asked apart).

    Built empty: each stage makes its samples and networks on first use.
    """
    return [s for s in default_stages(simulate=config.simulate, seed=config.seed, range_bound=config.range_bound)
            if s.name != "equivalence"]


def breeding_stage_names(config: SearchConfig) -> list[str]:
    """The names of :func:`breeding_stages`, for the funnel (no stage does any work)."""
    return [s.name for s in breeding_stages(config)]


class WorkerContext:
    """Per-process state for one configuration: filters, signatures, task."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.layout = dict(config.branches)
        self.searched = frozenset(config.searched)  # asked once per tree drawn: kept, not rebuilt
        stages = breeding_stages(config)
        # Random trees are drawn among those with the prediction leaf (variation.random_tree),
        # which gives the same children only because this stage rejects every tree without it.
        assert any(s.name == "validity" for s in stages)
        self.pipeline = FilterPipeline(stages, time_limit_s=config.filter_time_limit_s, num_threads=None,
                                       memo_size=200_000)
        self.equivalence = EquivalenceStage(seed=config.seed)
        self._signatures: dict[tuple[str, str], tuple] = {}
        self._task: Task | None = None
        self.start = config.start_genome()
        self.offspring = OffspringConfig(p_copy=0.0, p_reinit=0.0, n_mutations=config.n_mutations,
                                         init_depth=config.init_depth, max_height=config.max_height,
                                         max_size=config.max_size)

    @property
    def task(self) -> Task:
        """The task, its data loaded onto this worker's device (``config.device``) on first use.

        A worker of a pool whose workers share a GPU first caps its share of the GPU's memory
        (:func:`~gp_loss.runtime.device.share_gpu_memory`), before anything is allocated there.
        """
        if self._task is None:
            set_deterministic(self.config.deterministic)
            device = resolve_device(self.config.device)
            share_gpu_memory(device, self.config.device, gpu_sharers())
            self._task = make_task(self.config.task, self.config.task_options, device)
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


# -- warming a worker up ------------------------------------------------------------

def warm_up_optimizer() -> None:
    """One Adam step on a throwaway parameter.

    torch.optim's first step in a process imports torch._dynamo and its many
    modules: done here, it is not charged to the first training of the
    search, which the other workers would wait for.
    """
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([p])
    p.sum().backward()
    optimizer.step()


def freeze_warm_objects() -> None:
    """Exempt everything alive after warm-up from the garbage collector's full passes.

    After the warm-up a worker holds every object of torch, torch._dynamo and
    their imports, and each full collection walked them all, again and again
    while breeding allocates. ``gc.freeze`` moves them to a generation it never
    walks; reference counting still frees them. They are unfrozen at exit, so
    the interpreter's last collection sees them (otherwise triton's bindings
    report them as leaked).
    """
    global _UNFREEZE_AT_EXIT
    if not _UNFREEZE_AT_EXIT:
        atexit.register(gc.unfreeze)
        _UNFREEZE_AT_EXIT = True
    gc.freeze()


_UNFREEZE_AT_EXIT = False  # whether this process has registered gc.unfreeze with atexit

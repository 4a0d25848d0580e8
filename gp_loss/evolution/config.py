"""The search configuration: every constant of the two schemes, with the papers' defaults.

``SearchConfig`` is stored as ``config.json`` in the run directory; a resumed
run must have the same configuration (a budget may be raised), and
:func:`config_diff` says what differs.

Schemes:

* ``zero``: AutoLoss-Zero (Li et al., CVPR 2022): ``population`` (K=20) random genomes of
  depth ``init_depth`` (D=3); tournament over ``tournament_fraction`` (T=5%) of
  an aging population of the most recent ``max_population`` (P=2500);
  offspring by copy (10%), re-initialisation (50% of the rest) or
  ``n_mutations`` (2) typed mutations.
* ``cse``: CSE-Autoloss (Liu et al., ICLR 2021): start from ``start`` formulas (e.g. CE),
  search ``search`` branches with the others fixed; one-point crossover
  (``p_crossover``) and typed mutation, staticLimit-style bound on tree height,
  and the best ``population`` of parents and offspring survive. With
  ``search_in_turn`` the searched branches are searched one after another, as
  CSE-Autoloss searches a detector's classification branch with the regression
  branch fixed, then the regression branch with the classification branch fixed
  at the best found: the budget is split into equal consecutive phases, one per
  searched branch in ``search`` order (:meth:`SearchConfig.phase_at`).

Whatever the scheme, a child that changes several branches at once (a random
genome, a re-initialisation, an aging mutation) is bred one branch at a time:
each branch is redrawn until it passes the filters, then the next.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from primitives import KINDS

from gp_loss.errors import GpLossError
from gp_loss.evolution.mutation import OffspringConfig
from gp_loss.evolution.schemes import SCHEME_NAMES
from gp_loss.field_types import check_field_types
from gp_loss.language.genome import Genome, check_branch_name

# Fields a resumed run may change: they decide when to stop, not what is computed.
BUDGET_FIELDS = ("max_evaluations", "max_seconds")

# Seeds seed numpy's legacy generator among others, which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# Bound on ``max_height`` (and so on ``init_depth``): 17, the static height limit of
# Koza (1992) that DEAP's ``staticLimit`` examples use. A full random tree of depth D
# has up to 2**D leaves, so a much deeper one exhausts memory before it is drawn.
MAX_TREE_HEIGHT = 17
# Threads per evaluation beyond any machine's cores: more only fail to start (or crash BLAS).
MAX_TORCH_THREADS = 256
# Seeds of a final retraining, each a full training of every compared loss: far beyond any
# affordable protocol, and the jobs of a mistyped count (1e8) fill the memory before the first runs.
MAX_FINAL_SEEDS = 1000
WARM_STARTS = ("none", "baselines")
# Rungs of successive halving: each is a full pass over the promoted children, so a handful is plenty.
MAX_FIDELITIES = 8
MAX_REFINE = 10_000


def check_run_settings(run: dict) -> None:
    """The run settings every flag-table script shares (``runs/search_pap.py``, ``runs/hps_det.py``):
    ``threads``, ``final_seeds`` and ``seed`` within their bounds; a one-line :class:`GpLossError` if not."""
    from gp_loss.errors import GpLossError

    if run["threads"] > MAX_TORCH_THREADS:
        raise GpLossError(f"--threads must be at most {MAX_TORCH_THREADS}, got {run['threads']}")
    if run["final_seeds"] > MAX_FINAL_SEEDS:
        raise GpLossError(f"--final-seeds must be at most {MAX_FINAL_SEEDS}, got {run['final_seeds']}")
    if not 0 <= run["seed"] <= MAX_SEED:
        raise GpLossError(f"--seed must be in [0, 2**32 - 1], got {run['seed']}")


def check_fidelities(fidelities: list) -> None:
    """Raise :class:`GpLossError` unless ``fidelities`` ascend strictly in (0, 1] and end at 1."""
    if (not isinstance(fidelities, list) or not fidelities
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in fidelities)):
        raise GpLossError(f"fidelities must be a list of fractions of the proxy's length, e.g. 0.25,0.5,1; "
                          f"got {fidelities!r}")
    if len(fidelities) > MAX_FIDELITIES:
        raise GpLossError(f"fidelities may have at most {MAX_FIDELITIES} rungs, got {len(fidelities)}")
    if any(not (math.isfinite(f) and 0 < f <= 1) for f in fidelities) or fidelities[-1] != 1:
        raise GpLossError(f"fidelities must be fractions in (0, 1] ending at 1 (the full proxy), e.g. 0.25,0.5,1; "
                          f"got {','.join(f'{f:g}' for f in fidelities)}")
    if any(b <= a for a, b in zip(fidelities, fidelities[1:])):
        raise GpLossError(f"fidelities must ascend strictly, e.g. 0.25,0.5,1; "
                          f"got {','.join(f'{f:g}' for f in fidelities)}")


@dataclass
class SearchConfig:
    """Everything that decides a search's result (workers and output paths do not).

    ``search_in_turn`` (cse scheme, 2+ searched branches; CSE-Autoloss, Liu et al.,
    ICLR 2021): the searched branches are searched one at a time, in ``search``
    order, the others staying as they are. The budget ``max_evaluations`` is split
    into equal consecutive phases (phase p covers evaluations ``[p*B//n, (p+1)*B//n)``,
    :meth:`phase_at`), a function of the evaluation count alone, so a resumed run
    continues in the same phase. The first phase starts from the start genome; each
    later one from the best genome found so far, kept with its known score (no
    training) beside ``population - 1`` mutants of it in the phase's branch. The
    logbook's ``phase`` column names the branch of each generation. Raising the
    budget on resume re-splits it, and the search moves to whatever phase the new
    split puts its evaluation count in (a change of phase re-seeds the population).
    """

    task: str = "classification"
    task_options: dict = field(default_factory=dict)
    scheme: str = "zero"
    seed: int = 0
    # Genome layout: branch name -> kind; start formulas (cse scheme, fixed branches);
    # the branches searched (default: all).
    branches: dict = field(default_factory=lambda: {"cls": "cls"})
    start: dict = field(default_factory=lambda: {"cls": "neg(dot(y, log(softmax(x))))"})
    search: list = field(default_factory=list)
    # cse scheme, 2+ searched branches: search them one at a time, in `search` order, each for an
    # equal share of max_evaluations, every phase after the first starting from the best genome so far
    search_in_turn: bool = False
    # AutoLoss-Zero constants (Li et al., CVPR 2022, Sections 3.2 and 4)
    population: int = 20                 # K
    max_population: int = 2500           # P
    tournament_fraction: float = 0.05    # T
    init_depth: int = OffspringConfig.init_depth  # D
    p_copy: float = OffspringConfig.p_copy
    p_reinit: float = OffspringConfig.p_reinit
    n_mutations: int = OffspringConfig.n_mutations
    # CSE-Autoloss variation
    p_crossover: float = 0.5
    p_mutation: float = 0.5
    # Tree limits (static height limit for crossover; mutation retries);
    # init_depth <= max_height <= MAX_TREE_HEIGHT
    max_height: int = OffspringConfig.max_height
    max_size: int = OffspringConfig.max_size
    # Children per generation: all are bred and trained in one parallel map, and each
    # generation ends with a barrier where a worker may wait for another's last training,
    # so a generation should hold several children per worker (README, "Searching").
    offspring_per_generation: int = 20
    # Budget: proxy trainings, and optionally wall time (not reproducible)
    max_evaluations: int = 200
    max_seconds: float | None = None
    # Filters before proxy training
    simulate: bool = False               # add CSE-Autoloss's model-optimisation simulation
    # Numerical-range stage: per-sample loss and gradient within ±range_bound (None: no such stage)
    range_bound: float | None = 1e4
    # Seconds of CPU time one filter stage may spend on one candidate (gp_loss.timeout): a
    # backstop for pathological formulas, far above what any stage needs, and counted in CPU
    # time so that a busy machine does not reject what an idle one accepts.
    filter_time_limit_s: float = 10.0
    max_breed_tries: int = 100_000       # filter retries for one child before the slot is dropped
    # Proxy training; its limit counts CPU time on the CPU, wall time on a GPU (TrainingRun)
    eval_time_limit_s: float = 120.0
    torch_threads: int = 1               # per evaluation; fixed so results do not depend on workers
    device: str = "auto"                 # auto (CUDA when present), cpu, cuda, cuda:N
    deterministic: bool = False          # torch.use_deterministic_algorithms in every worker
    # Results
    # The initial population: "none" (random genomes, or the cse scheme's start and its mutants) or
    # "baselines" (the task's baselines that fit the searched branches, then those; see Search.warm_start)
    warm_start: str = "none"
    # Successive halving (Li et al., JMLR 2018): ascending fractions of the proxy's length, ending at 1.
    # A generation's children train at the first; the best ``promote`` of each rung move on to the next.
    fidelities: list = field(default_factory=lambda: [1.0])
    promote: float = 1 / 3
    # Proxy evaluations per top formula spent tuning its numeric literals after the search (0: off)
    refine: int = 0
    # The hall of fame's best 2 × final_top are trained for the final schedule on the validation split
    # with this many seeds; the final top is the best of them by mean (0: the hall of fame's order)
    selection_seeds: int = 2
    # Results
    hall_of_fame_size: int = 10
    final_top: int = 3                   # best losses retrained at the end
    final_seeds: int = 5                 # paired: every loss and baseline trains on the same seeds
    baselines: list = field(default_factory=lambda: ["ce"])

    # -- checking -------------------------------------------------------------
    def check(self) -> "SearchConfig":
        """Raise :class:`GpLossError` naming the first bad value; return ``self``."""
        from gp_loss.runtime.device import check_device
        from gp_loss.tasks import task_info

        check_field_types(self)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise GpLossError(f"{f.name} must be a finite number, got {v}")
        if not 0 <= self.seed <= MAX_SEED:
            raise GpLossError(f"seed must be in [0, {MAX_SEED}] (2**32 - 1), got {self.seed}: "
                              f"give --seed in that range")
        if self.scheme not in SCHEME_NAMES:
            raise GpLossError(f"scheme must be one of {', '.join(SCHEME_NAMES)}, got {self.scheme!r}")
        for name in ("population", "max_population", "init_depth", "offspring_per_generation",
                     "max_evaluations", "max_height", "max_size", "max_breed_tries", "torch_threads",
                     "hall_of_fame_size", "final_seeds"):
            if int(getattr(self, name)) < 1:
                raise GpLossError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_mutations", "final_top"):
            if int(getattr(self, name)) < 0:
                raise GpLossError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not self.init_depth <= self.max_height <= MAX_TREE_HEIGHT:
            raise GpLossError(f"init_depth ({self.init_depth}) <= max_height ({self.max_height}) <= "
                              f"{MAX_TREE_HEIGHT} must hold (deeper random trees exhaust memory): "
                              f"lower --init-depth or max_height")
        if self.max_population < self.population:
            raise GpLossError(f"max_population ({self.max_population}) must be at least population "
                              f"({self.population})")
        for name in ("tournament_fraction", "p_copy", "p_reinit", "p_crossover", "p_mutation"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise GpLossError(f"{name} is a probability/fraction in [0, 1], got {v}")
        for name in ("filter_time_limit_s", "eval_time_limit_s", "max_seconds", "range_bound"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise GpLossError(f"{name} must be positive, got {v}")
        if self.torch_threads > MAX_TORCH_THREADS:
            raise GpLossError(f"torch_threads must be at most {MAX_TORCH_THREADS}, got {self.torch_threads}")
        if self.warm_start not in WARM_STARTS:
            raise GpLossError(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {self.warm_start!r}")
        check_fidelities(self.fidelities)
        if len(self.fidelities) > 1 and self.max_evaluations < sum(self.fidelities):
            raise GpLossError(f"max_evaluations ({self.max_evaluations}) cannot take one child through every "
                              f"fidelity ({'+'.join(f'{f:g}' for f in self.fidelities)} = "
                              f"{sum(self.fidelities):g} full proxy trainings): raise it, or give fewer fidelities")
        if not 0 < self.promote < 1:
            raise GpLossError(f"promote is the fraction of a rung that moves on to the next fidelity, in (0, 1); "
                              f"got {self.promote}")
        if not 0 <= self.refine <= MAX_REFINE:
            raise GpLossError(f"refine (proxy evaluations per top formula) must be in [0, {MAX_REFINE}], "
                              f"got {self.refine}")
        if not 0 <= self.selection_seeds <= MAX_FINAL_SEEDS:
            raise GpLossError(f"selection_seeds must be in [0, {MAX_FINAL_SEEDS}], got {self.selection_seeds}")
        if self.final_seeds > MAX_FINAL_SEEDS:
            raise GpLossError(f"final_seeds must be at most {MAX_FINAL_SEEDS}, got {self.final_seeds}")
        for name in ("branches", "start"):
            mapping = getattr(self, name)
            for key, value in mapping.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise GpLossError(f"{name} must map branch names to text, got {key!r}: {value!r}")
        for name in ("search", "baselines"):
            for value in getattr(self, name):
                if not isinstance(value, str):
                    raise GpLossError(f"{name} must be a list of names, got an entry {value!r}")
        if not isinstance(self.branches, dict) or not self.branches:
            raise GpLossError("branches must map at least one branch name to a kind, e.g. {\"cls\": \"cls\"}")
        for name, kind in self.branches.items():
            check_branch_name(name)
            if kind not in KINDS:
                raise GpLossError(f"branch {name!r}: unknown operator set (kind) {kind!r}; "
                                  f"known: {', '.join(KINDS)}")
        for name in self.search:
            if name not in self.branches:
                raise GpLossError(f"search names branch {name!r}, which is not among the branches "
                                  f"({', '.join(self.branches)})")
        fixed = [n for n in self.branches if n not in self.searched]
        need = list(self.branches) if self.scheme == "cse" else fixed
        missing = [n for n in need if n not in self.start]
        if missing:
            raise GpLossError(f"start formula missing for branch(es) {', '.join(missing)} "
                              f"({'the cse scheme starts from them' if self.scheme == 'cse' else 'they are fixed'}); "
                              f"give --start NAME=FORMULA")
        if self.search_in_turn:
            if self.scheme != "cse":
                raise GpLossError(f"search_in_turn needs the cse scheme (it searches the branches one after "
                                  f"another from the start formulas), got scheme {self.scheme!r}")
            if len(self.searched) < 2:
                raise GpLossError(f"search_in_turn searches the searched branches one after another, so it needs "
                                  f"at least 2 of them; searched: {', '.join(self.searched)}")
            if self.max_evaluations < len(self.searched):
                raise GpLossError(f"search_in_turn gives each of the {len(self.searched)} searched branches an "
                                  f"equal share of max_evaluations ({self.max_evaluations}): raise it to at least "
                                  f"{len(self.searched)}")
        extra = [n for n in self.start if n not in self.branches]
        if extra:
            raise GpLossError(f"start formula for unknown branch(es) {', '.join(extra)}")
        start = self.start_genome()  # parse errors name the branch and position
        for branch in start or ():
            # Start formulas are bred like any genome: beyond these limits every mutation and
            # crossover is refused, and formatting a huge tree each generation costs minutes.
            if branch.tree.height > self.max_height or len(branch.tree) > self.max_size:
                raise GpLossError(f"start formula of branch {branch.name!r} has height {branch.tree.height} and "
                                  f"{len(branch.tree)} nodes; the search's limits are max_height "
                                  f"{self.max_height} and max_size {self.max_size}: shorten it or raise them")
        check_device(self.device)
        # The registry's metadata and the options' own checks: no data is loaded here.
        task = task_info(self.task)
        options = task.make_options(self.task_options)
        for name, kind in self.branches.items():
            if kind not in task.kinds:
                raise GpLossError(f"branch {name!r} has kind {kind}, which the {self.task} task cannot train; "
                                  f"it takes {', '.join(task.kinds)}")
        if task.layout_of is not None:  # a model with fixed loss branches (a detector)
            layout = task.layout(options)
            if dict(self.branches) != layout:
                raise GpLossError(f"the {self.task} task's model trains the branches "
                                  + ", ".join(f"{n} ({k})" for n, k in layout.items())
                                  + "; branches gives " + ", ".join(f"{n} ({k})" for n, k in self.branches.items())
                                  + ": give exactly those (or leave branches and start to the script's defaults)")
        known = task.baselines_for(options)
        for name in self.baselines:
            if name not in known:
                raise GpLossError(f"unknown baseline {name!r} for task {self.task}; "
                                  f"known: {', '.join(known)}")
        return self

    @property
    def searched(self) -> list[str]:
        """Branch names under search (all when ``search`` is empty)."""
        return list(self.search) or list(self.branches)

    def phase_at(self, evaluations: int) -> int:
        """With ``search_in_turn``: the phase (an index into :attr:`searched`) of a search that has made
        ``evaluations`` proxy trainings.

        Phase p covers the evaluations ``[p*B//n, (p+1)*B//n)``, where B is ``max_evaluations``
        and n the number of searched branches; the last phase once the budget is spent.
        """
        n, budget = len(self.searched), self.max_evaluations
        for p in range(n):
            if evaluations < (p + 1) * budget // n:
                return p
        return n - 1

    def phase_end(self, phase: int) -> int:
        """The evaluation count at which ``phase`` ends (:meth:`phase_at`)."""
        return (phase + 1) * self.max_evaluations // len(self.searched)

    @property
    def selection_seed_list(self) -> list[int]:
        """The ``selection_seeds`` seeds that choose the final top: apart from the search's and the final's."""
        return [self.seed + 2000 + i for i in range(self.selection_seeds)]

    @property
    def retrain_seeds(self) -> list[int]:
        """The ``final_seeds`` seeds of the final retraining (:func:`retrain_seeds`)."""
        return retrain_seeds(self.seed, self.final_seeds)

    def start_genome(self) -> Genome | None:
        """The start formulas as a genome (only the branches that have one)."""
        if not self.start:
            return None
        return Genome.from_formulas((n, self.branches[n], f) for n, f in self.start.items()
                                    if n in self.branches)

    # -- storage --------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GpLossError(f"unknown configuration key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


# Fields added after runs were already being made, with the value that reproduces what those
# runs did: a config.json without them is read with these, so such runs resume unchanged.
ADDED_FIELDS = {"device": "cpu", "deterministic": False, "range_bound": None, "search_in_turn": False,
                "warm_start": "none", "fidelities": [1.0], "promote": 1 / 3, "refine": 0, "selection_seeds": 0}


def with_added_fields(stored: dict) -> dict:
    """A stored configuration with the :data:`ADDED_FIELDS` it predates filled in."""
    return {**ADDED_FIELDS, **stored} if isinstance(stored, dict) else stored


def retrain_seeds(seed: int, count: int) -> list[int]:
    """The seeds of the final protocol for a search seeded ``seed``: apart from the search's own."""
    return [seed + 1000 + i for i in range(count)]


def config_digest(config: dict, ignore: tuple[str, ...] = BUDGET_FIELDS) -> str:
    """SHA-256 of a resolved configuration (as :meth:`SearchConfig.to_dict` gives it), ``ignore`` left out."""
    kept = {k: v for k, v in config.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode("utf-8")).hexdigest()


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = BUDGET_FIELDS) -> list[str]:
    """Lines ``key: old -> new`` for every differing key outside ``ignore``."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return lines

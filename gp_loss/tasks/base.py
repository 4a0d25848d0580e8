"""What the search needs from a task: proxy fitness, a final score, and what it is.

A task trains its own model under a candidate genome (one loss per branch it
declares) and returns the metric it cares about. The evolution engine sees
:class:`TrainOutcome` and the task's :class:`TaskInfo` (from the registry,
:mod:`gp_loss.tasks.registry`); tasks are built in each worker process from a
JSON-able spec (``make_task(name, options, device)``), so SCOOP and
multiprocessing workers construct them themselves and the parent process never
loads a task's data unless it trains.
"""
from __future__ import annotations

import gc
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator, Protocol

import torch

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.runtime.device import deterministic_error
from gp_loss.timeout import TOO_SLOW


@dataclass
class TrainOutcome:
    """Metric after training (``score``, higher is better) and how training ended.

    ``status``: ``"ok"``; ``"non-finite"`` (a branch's loss turned NaN/Inf and
    training stopped there; ``reason`` names the branch); ``"error"`` (the loss
    raised); ``"too slow"`` (time limit, see :class:`TrainingRun`). A failed training scores 0. A task may
    stop a proxy training early with its own status and score (segmentation's
    ``"collapsed"``: the metrics of a network that predicts one class everywhere).
    ``losses``: each branch's loss value at the last step checked (the terms
    by branch name, before they are summed; ``None`` where not finite, so the
    record stays strict JSON).
    ``metrics``: every metric the task measured (e.g. detection's ``AP``, ``AP50``, ...;
    ``None`` where undefined), of which ``score`` is the one searched for.
    ``hit_time_limit``: the time limit stopped this training. Its score could then differ on a
    machine with more or less to do (:func:`gp_loss.timeout.load_dependence` says so for a run).
    ``peak_memory_mib``: the memory the training took at its peak (:func:`peak_memory_mib`), like
    ``seconds`` a measurement of the machine, not of the loss; ``None`` where not measured.
    """

    score: float
    status: str = "ok"
    reason: str = ""
    steps: int = 0
    seconds: float = 0.0
    losses: dict[str, float | None] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    hit_time_limit: bool = False
    peak_memory_mib: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def failed(self) -> bool:
        """Whether training ended without measuring the loss (:data:`FAILED_STATUSES`); a task's own early
        stop (``"collapsed"``) is scored, not failed."""
        return self.status in FAILED_STATUSES


# Statuses of a training that measured nothing: its score 0 says only that it failed.
FAILED_STATUSES = ("non-finite", "error", TOO_SLOW)


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, without its data.

    Attributes:
        name: the task's name (``SearchConfig.task``, ``gp-loss evaluate --task``).
        summary: one line for help texts.
        options: its options dataclass (``from_dict(dict)``, ``check()``).
        task_class: built as ``task_class(options, device)`` where it trains.
        branches: the default genome layout, branch name -> kind.
        kinds: the kinds a branch of this task may have.
        metric: what the fitness measures (higher is better).
        baseline_losses: baseline name -> branch -> a loss of
            :data:`~gp_loss.paper_losses.PAPER_LOSSES` (the one table of paper losses).
        layout_of: for a task whose layout depends on its options (a detector's branches):
            options -> branch name -> kind.
        baseline_texts_of: for a task whose baselines depend on its options, or are not all
            formulas (a detector's own loss code): options -> name -> branch -> text shown.
            Baselines are trained by name (the task's ``baseline(name)``).
        final_split: where the final score is measured (``"test"``, or ``"validation"`` for a
            task whose data has two splits).
        reference_baseline: the baseline whose formulas fill the branches a user leaves out
            (``gp-loss evaluate --loss cls=F`` on a detector), or ``None``.
        metric_of: for a task whose fitness metric is an option (detection's AP50, segmentation's
            BF1): options -> the metric's name. ``metric`` is then the default's.
        proxy_option: the option that holds the proxy training's length, in the task's unit
            (``proxy_epochs``, ``proxy_steps``): what ``gp-loss bench proxy`` varies. ``None``: no such option.
        search_script: the script in ``runs/`` that searches the task's losses (its file name), as a
            user runs it: what ``gp-loss bench device`` and ``gp-loss bench gpu`` time. ``None``: none.
    """

    name: str
    summary: str
    options: type
    task_class: type
    branches: dict[str, str]
    kinds: tuple[str, ...]
    metric: str
    baseline_losses: dict[str, dict[str, str]] = field(default_factory=dict)
    layout_of: Callable[[Any], dict[str, str]] | None = None
    baseline_texts_of: Callable[[Any], dict[str, dict[str, str]]] | None = None
    reference_baseline: str | None = None
    final_split: str = "test"
    metric_of: Callable[[Any], str] | None = None
    proxy_option: str | None = None
    search_script: str | None = None

    @cached_property
    def baselines(self) -> dict[str, dict[str, str]]:
        """Baseline name -> branch -> formula text (the default options' baselines)."""
        return self.baselines_for(self.options())

    def baselines_for(self, options) -> dict[str, dict[str, str]]:
        """Baseline name -> branch -> formula text (or what trains it) under the checked ``options``."""
        if self.baseline_texts_of is not None:
            return self.baseline_texts_of(options)
        return {name: {branch: PAPER_LOSSES[loss].formula for branch, loss in losses.items()}
                for name, losses in self.baseline_losses.items()}

    def metric_for(self, options) -> str:
        """The name of the metric the fitness measures under the checked ``options``."""
        return self.metric if self.metric_of is None else self.metric_of(options)

    def layout(self, options) -> dict[str, str]:
        """The default branch layout (name -> kind) under the checked ``options``."""
        return dict(self.branches) if self.layout_of is None else self.layout_of(options)

    def make_options(self, options: dict | None = None):
        """The checked options object from a dict of option fields."""
        if options is not None and not isinstance(options, dict):
            raise GpLossError(f"{self.name} task options must be a mapping of option names to values, "
                              f"got {type(options).__name__}")
        opts = self.options.from_dict(dict(options or {}))
        opts.check()
        return opts


# Proxy training stops at the first non-finite loss (AutoLoss-Zero: within 20 iterations).
# On the CPU every step is checked; on a GPU each check waits for the device, so the
# losses of this many steps are checked at once and the first bad one is named.
NAN_CHECK_EVERY_GPU = 20


class NonFiniteWatch:
    """AutoLoss-Zero's early stop for a training loop: the first step whose loss is NaN/Inf, by branch.

    ``add(total, terms)`` after each step's forward pass returns ``None`` while
    all is well, or ``(steps back, reason)`` when a check finds a bad step:
    ``steps back`` is how many of the steps added since are past it (0 on the
    CPU, where every step is checked). ``flush()`` checks what is left, before
    training ends for any reason. ``losses`` holds each branch's loss at the last
    step checked (``None`` where it is not finite), for the training's record.
    """

    def __init__(self, device: torch.device):
        self.every = 1 if device.type == "cpu" else NAN_CHECK_EVERY_GPU
        self._pending: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self._last: dict[str, torch.Tensor] = {}

    def add(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> tuple[int, str] | None:
        self._pending.append((total.detach(), {name: t.detach() for name, t in terms.items()}))
        return self.flush() if len(self._pending) >= self.every else None

    def flush(self) -> tuple[int, str] | None:
        pending, self._pending = self._pending, []
        if not pending:
            return None
        bad = first_non_finite(pending)
        self._last = pending[-1 if bad is None else bad[0]][1]
        return None if bad is None else (len(pending) - 1 - bad[0], bad[1])

    def drop(self) -> None:
        """Forget the steps not yet checked (their losses stay unknown)."""
        self._pending.clear()

    @property
    def losses(self) -> dict[str, float | None]:
        values = {name: float(t) for name, t in self._last.items()}
        return {name: v if math.isfinite(v) else None for name, v in values.items()}


class TrainingRun:
    """The bookkeeping every task's training loop shares: steps, AutoLoss-Zero's early stop, the time limit.

    The loop calls :meth:`checked` after each forward pass and :meth:`stepped` after each
    optimizer step (each returns the outcome to end training with, or ``None``),
    :meth:`finished` when its steps are done, and :meth:`failed` from its ``except
    Exception``: a bad loss ends its own training, never the search.

    The time limit counts, on the CPU, the CPU time of the training thread
    (``time.thread_time``), which other processes sharing the cores barely move:
    with wall time, a proxy that finishes on an idle machine could be stopped on a
    busy one and score 0, and the search would take another path. On a GPU the
    work is the device's, which no CPU clock sees, so the limit counts wall time
    there. Either way a training it stops says so (``hit_time_limit``).
    ``seconds`` of the outcome is always wall time; ``peak_memory_mib`` is measured as
    :func:`peak_memory_mib` says, from the start of this training on CUDA.

    Out of memory (:func:`out_of_memory`) is the candidate's failure like any other error, its
    reason starting ``out of memory:``; what the failed step held is released at once (cached
    GPU blocks included), so that the next training, and the other workers sharing the GPU, get
    the memory back.
    """

    def __init__(self, device: torch.device, time_limit_s: float | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and torch.cuda.is_available():  # this training's peak, not the worker's
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        self.limit_clock = time.thread_time if device.type == "cpu" else time.perf_counter
        self.limit_start = self.limit_clock()
        self.time_limit_s = time_limit_s
        self.watch = NonFiniteWatch(device)
        self.steps = 0  # optimizer steps taken

    def outcome(self, score: float, status: str = "ok", reason: str = "",
                metrics: dict | None = None) -> TrainOutcome:
        return TrainOutcome(score, status, reason, self.steps, time.perf_counter() - self.start, self.watch.losses,
                            metrics or {}, hit_time_limit=status == TOO_SLOW,
                            peak_memory_mib=peak_memory_mib(self.device))

    def over_time(self) -> bool:
        return self.time_limit_s is not None and self.limit_clock() - self.limit_start > self.time_limit_s

    def _limit_text(self) -> str:
        clock = " of CPU time" if self.limit_clock is time.thread_time else ""
        return f"over {self.time_limit_s:g} s{clock}"

    def _stopped(self, bad: tuple[int, str], back: int) -> TrainOutcome:
        self.steps -= bad[0] + back  # the bad step's index: the optimizer steps before it
        return self.outcome(0.0, "non-finite", f"{bad[1]} at step {self.steps}")

    def checked(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> TrainOutcome | None:
        """After a forward pass (its optimizer step not taken yet): the outcome if a checked loss is not finite."""
        bad = self.watch.add(total, terms)
        return None if bad is None else self._stopped(bad, 0)

    def stepped(self) -> TrainOutcome | None:
        """After an optimizer step: the outcome if the time limit has passed (or a bad step shows then)."""
        self.steps += 1
        if not self.over_time():
            return None
        bad = self.watch.flush()
        return self._stopped(bad, 1) if bad else self.outcome(
            0.0, TOO_SLOW, f"{self._limit_text()} at step {self.steps}")

    def step(self, total: torch.Tensor, terms: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             max_grad_norm: float = 0.0, schedule: torch.optim.lr_scheduler.LRScheduler | None = None
             ) -> TrainOutcome | None:
        """One training step from a forward pass's ``total`` loss and its ``terms`` by branch.

        The non-finite check (:meth:`checked`), backward, gradient-norm clipping (``max_grad_norm``
        > 0), the optimizer's and the schedule's step, then the time limit (:meth:`stepped`).
        Returns the outcome to end training with, or ``None``.
        """
        if (end := self.checked(total, terms)) is not None:
            return end
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                           max_grad_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        return self.stepped()

    def collapsed(self, evaluate: Callable[[], dict[str, float | None]], name: str, chance: float,
                  what: str) -> TrainOutcome | None:
        """The collapse check in the middle of a training: the outcome to stop with when the ``name`` metric of
        ``evaluate()`` is no better than ``chance``, the level of ``what`` (a constant prediction); else ``None``.

        Such a proxy has learned nothing yet: it stops with status ``"collapsed"``, scored at that point
        (unless the evaluation itself ran past the time limit). A non-finite step not yet checked (on a GPU,
        :meth:`step` checks in batches) stops the training first, before its model is evaluated.
        """
        if (end := self.finished()) is not None:
            return end
        metrics = evaluate()
        value = metrics.get(name) or 0.0
        if value > chance:
            return None
        outcome = self.scored(metrics, name)
        if outcome.status == "ok":
            outcome.status = "collapsed"
            outcome.reason = (f"validation {name} {value:.4g} at step {self.steps} is no better than {what} "
                              f"({chance:.4g})")
        return outcome

    def scored(self, metrics: dict[str, float | None], name: str) -> TrainOutcome:
        """The outcome of a finished training evaluated to ``metrics``: its ``name`` metric (0 where undefined),
        or "too slow" if the evaluation ran past the time limit."""
        if self.over_time():
            return self.outcome(0.0, TOO_SLOW, f"{self._limit_text()} with the evaluation", metrics)
        value = metrics.get(name)
        return self.outcome(0.0 if value is None else value, metrics=metrics)

    def finished(self) -> TrainOutcome | None:
        """When the steps are done: the outcome if a step not yet checked was not finite."""
        bad = self.watch.flush()  # every step added has had its optimizer step
        return None if bad is None else self._stopped(bad, 1)

    def failed(self, err: Exception) -> TrainOutcome:
        """The outcome of a training the loss made raise (the task's own kernels refusing stop the search)."""
        stop = deterministic_error(err)
        if stop is not None:  # every training would fail alike
            raise stop from None
        if out_of_memory(err):
            # The pending losses may be what filled the memory: no check of them, no sync on a full GPU.
            self.watch.drop()
            release_memory(err, self.device)
            return self.outcome(0.0, "error", out_of_memory_reason(err))
        self.watch.flush()
        return self.outcome(0.0, "error", error_text(err))


def error_text(err: BaseException) -> str:
    """``"Type: first line of the message"``: an error as a training's reason."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


OUT_OF_MEMORY = "out of memory"
# What torch's allocators say when they cannot allocate, where the error is a plain RuntimeError
# (the CPU allocator; cuDNN and cuBLAS failing to allocate their workspaces).
_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "CUDNN_STATUS_ALLOC_FAILED",
                        "CUBLAS_STATUS_ALLOC_FAILED")


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says the process ran out of memory: ``torch.OutOfMemoryError`` (CUDA's,
    also ``torch.cuda.OutOfMemoryError``), Python's ``MemoryError``, or an allocator's RuntimeError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err) for t in _OUT_OF_MEMORY_TEXTS)


def out_of_memory_reason(err: BaseException) -> str:
    """The reason of a training that ran out of memory: ``"out of memory: Type: first line"``."""
    return f"{OUT_OF_MEMORY}: {error_text(err)}"


def release_memory(err: BaseException | None, device: torch.device) -> None:
    """Free what a training that raised ``err`` still holds on ``device``.

    The traceback keeps the frames of the failed step alive, and with them its activations and
    gradients: their locals are cleared (frames still running are left alone), the garbage
    collector breaks the cycles left, and on CUDA the caching allocator gives its free blocks
    back to the driver (``torch.cuda.empty_cache``), for the other processes sharing the GPU.
    """
    if err is not None and err.__traceback__ is not None:
        traceback.clear_frames(err.__traceback__)
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_mib(device: torch.device) -> float | None:
    """The peak memory of the training on ``device``, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` since :class:`TrainingRun` reset the peak (the
    tensors' memory, not the allocator's cache or the CUDA context). CPU: the process's peak
    resident set size (``ru_maxrss``), which covers its whole life, data and imports included.
    ``None`` where it cannot be measured: CUDA not available, no ``resource`` module (Windows).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 if torch.cuda.is_available() else None
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def first_non_finite(steps: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[int, str] | None:
    """``(position, "loss of branch 'b' is nan")`` of the first step whose total loss is not finite.

    A step is its total and its terms by branch. The total is finite exactly when
    every term is and their sum does not overflow, so one check of the totals
    (one device synchronisation for all the steps given) finds the step; its
    terms then name the branch.
    """
    totals = steps[0][0] if len(steps) == 1 else torch.stack([total for total, _ in steps])
    finite = torch.isfinite(totals)
    if bool(finite.all()):
        return None
    at = int((~finite.reshape(-1)).nonzero()[0, 0])
    total, terms = steps[at]
    for name, t in terms.items():
        if not torch.isfinite(t):
            return at, f"loss of branch {name!r} is {t.item()}"
    return at, f"the sum of the branch losses is {total.item()}"


SCHEDULES = ("cosine", "constant")


def warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor at step s: linear warm-up over ``warmup`` steps, then a cosine decay to 0."""
    warmup = max(1, min(warmup, steps))

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    return factor


def lr_schedule(optimizer: torch.optim.Optimizer, name: str, steps: int,
                warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of a training of ``steps`` steps: a linear warm-up, then ``name``.

    ``"cosine"`` decays to 0 at the last step (Loshchilov & Hutter, "SGDR", ICLR 2017, one cycle):
    a short proxy then ends at a settled point rather than mid-stride, and a shortened proxy
    (successive halving) gets the whole schedule compressed, its warm-up taking at most a quarter of
    it. ``"constant"`` keeps the rate after ``warmup_steps`` of warm-up.
    """
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, min(warmup_steps, steps // 4)))
    warmup = max(1, warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


def check_collapse_check(fraction: float) -> None:
    """Raise :class:`GpLossError` unless ``fraction`` (the task option ``collapse_check``: where in a proxy its
    collapse check runs, a fraction of ``proxy_steps``; 0: never) is in [0, 1)."""
    if not 0 <= fraction < 1:
        raise GpLossError(f"task option collapse_check must be in [0, 1) (a fraction of proxy_steps; 0: never), "
                          f"got {fraction}")


def proxy_steps_and_check(proxy_steps: int, fidelity: float, collapse_check: float) -> tuple[int, int]:
    """A proxy's optimizer steps at ``fidelity`` (:func:`fidelity_steps`) and the step of its collapse check,
    ``collapse_check`` of them (0: never), scaled alike."""
    steps = fidelity_steps(proxy_steps, fidelity)
    return steps, round(collapse_check * steps)


def fidelity_steps(steps: int, fidelity: float) -> int:
    """The optimizer steps of a proxy of ``steps`` trained at ``fidelity`` (a fraction in (0, 1]): at least one."""
    return steps if fidelity == 1.0 else max(1, round(fidelity * steps))


def epoch_batches(pool: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[list[int]]:
    """``steps`` batches of ``batch_size`` indices into ``range(pool)``: epochs over the pool, each reshuffled
    by ``generator`` when the one before runs short (a batch may span two epochs)."""
    queue: list[int] = []
    for _ in range(steps):
        if len(queue) < batch_size:
            queue += torch.randperm(pool, generator=generator).tolist()
        index, queue = queue[:batch_size], queue[batch_size:]
        yield index


class Task(Protocol):
    """A search task, built by ``info.task_class(options, device)``."""

    info: TaskInfo
    device: torch.device

    def baseline(self, name: str) -> Any:
        """The loss of the baseline ``name``, as :meth:`proxy_fitness` and :meth:`final_score` take it."""

    def proxy_fitness(self, genome: Genome, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation metric after proxy training with ``genome``'s losses (or a :meth:`baseline`'s), for
        ``fidelity`` of the proxy's length (:func:`fidelity_steps`)."""

    def final_score(self, genome: Genome, seed: int) -> TrainOutcome:
        """Test metric after the full training with ``genome``'s losses (or a :meth:`baseline`'s)."""

    def selection_score(self, genome: Genome, seed: int) -> TrainOutcome:
        """Validation metric after the full training: what chooses among found losses without looking at
        the split the final score is measured on (the same as :meth:`final_score` for a task whose final
        split is the validation split)."""

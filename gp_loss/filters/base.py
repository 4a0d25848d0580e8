"""What every filter stage shares: the candidate it judges and the verdict it gives.

A stage is a small object with a ``name`` and ``__call__(candidate) ->
StageResult``. It must never raise for a bad candidate: an exception, NaN,
Inf or overrun inside the candidate's loss is a rejection with its reason
(:func:`rejection_reason`). A limit of gp-loss itself (Python's recursion
limit) is not the loss's fault: the pipeline reports such a candidate as not
judged (``judged=False``), never as rejected for a property it may not have.
The pipeline (:mod:`gp_loss.filters.pipeline`) runs stages cheapest first and
stops a candidate at its first rejection.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import torch
from deap import gp

from primitives import Kind

from gp_loss.language.compile import CompiledTree, compile_tree, reduced_loss
from gp_loss.probes.samples import SampleBatch


@dataclass
class StageResult:
    """``passed`` with a human ``reason`` and the ``numbers`` behind the verdict."""

    stage: str
    passed: bool
    reason: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    judged: bool = True  # False: a limit of gp-loss stopped the stage (not passed, not the loss's fault)
    # True: rejected for its time limit. Such a verdict could differ on a machine with more or less
    # to do, so it is counted apart (Funnel.too_slow) and never replayed from the memo.
    timed_out: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Exceptions that say something about gp-loss, not about the loss under test.
INTERNAL_LIMITS = (RecursionError,)


def rejection_reason(err: Exception) -> str:
    """The rejection reason of an exception raised by a candidate's loss; gp-loss's own limits
    (:data:`INTERNAL_LIMITS`) are raised again for the pipeline to report as not judged."""
    if isinstance(err, INTERNAL_LIMITS):
        raise err
    return f"{type(err).__name__}: {err}"


class Candidate:
    """One loss branch under test: its kind, tree, and the tree compiled once for every stage.

    ``program(*inputs)`` returns the unreduced output (see
    :class:`~gp_loss.language.compile.CompiledTree`); ``loss(*inputs) -> scalar``
    is that output with the kind's reduction. Both take the kind's inputs in
    order (``x, y, w`` / ``i, u, e`` / ``yhat, y``). ``info`` lets stages leave
    results for later ones (e.g. the gradient-equivalence signature). Do not
    change the tree once the candidate is made.

    The tree is compiled on first use of ``program`` or ``loss``: most random
    trees are rejected by the convergence stage, which evaluates them on its
    sweep without compiling (and rejects trees without the prediction from
    their node names alone), so compiling up front was wasted on them.
    """

    __slots__ = ("kind", "tree", "info", "names", "_program", "_loss")

    def __init__(self, kind: Kind, tree: gp.PrimitiveTree, names: tuple[str, ...] | None = None):
        self.kind = kind
        self.tree = tree
        self.info: dict = {}
        # The node names in prefix order (given by callers that have them already).
        self.names = tuple([node.name for node in tree]) if names is None else names
        self._program: CompiledTree | None = None
        self._loss: Callable[..., torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"Candidate(kind={self.kind.name!r}, tree={str(self.tree)!r})"

    @property
    def program(self) -> CompiledTree:
        if self._program is None:
            self._program = compile_tree(self.kind, self.tree)
        return self._program

    @program.setter
    def program(self, program: CompiledTree) -> None:
        self._program, self._loss = program, None

    @property
    def loss(self) -> Callable[..., torch.Tensor]:
        if self._loss is None:
            self._loss = reduced_loss(self.kind.name, self.program)
        return self._loss

    @loss.setter
    def loss(self, loss: Callable[..., torch.Tensor]) -> None:  # (tests give stages a failing loss)
        self._loss = loss

    @property
    def formula(self) -> str:
        return self.program.text

    @property
    def inputs_used(self) -> frozenset[str]:
        """The names of the inputs the tree reads (``x``, ...; their terminals are ``ARG0``, ...)."""
        names = self.names
        return frozenset([value for value, terminal in self.kind.input_terminals.items() if terminal.name in names])

    @property
    def reads_prediction(self) -> bool:
        """Whether the tree has the prediction leaf; without it the loss cannot depend on it."""
        return self.kind.prediction in self.inputs_used


class KindBatches:
    """Each kind's sample batch (:meth:`~gp_loss.kinds.KindSpec.sample_batch`), made on first use and kept."""

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu"):
        self.seed, self.device = seed, device
        self._batches: dict[str, SampleBatch] = {}

    def __call__(self, kind_name: str) -> SampleBatch:
        if kind_name not in self._batches:
            from gp_loss.kinds import kind_spec  # (the kinds' registry imports the stages' probes)
            self._batches[kind_name] = kind_spec(kind_name).sample_batch(seed=self.seed, device=self.device)
        return self._batches[kind_name]


class Stage(Protocol):
    """A filter stage: ``name`` and a verdict for a candidate.

    A stage may also have ``prepare(kind_name)``, which builds what it needs for that kind
    (samples, networks, sweeps) once; the pipeline calls it outside the candidates' time
    limit, so that no candidate is charged for it.
    """

    name: str

    def __call__(self, candidate: Candidate) -> StageResult: ...

"""What every filter stage shares: the candidate it judges and the verdict it gives.

A stage is a small object with a ``name`` and ``__call__(candidate) ->
StageResult``. It must never raise for a bad candidate: an exception, NaN,
Inf or overrun inside the candidate's loss is a rejection with its reason.
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


@dataclass
class StageResult:
    """``passed`` with a human ``reason`` and the ``numbers`` behind the verdict."""

    stage: str
    passed: bool
    reason: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    """One loss branch under test: its kind, tree, and the tree compiled once for every stage.

    ``program(*inputs)`` returns the unreduced output (see
    :class:`~gp_loss.language.compile.CompiledTree`); ``loss(*inputs) -> scalar``
    is that output with the kind's reduction. Both take the kind's inputs in
    order (``x, y, w`` / ``i, u, e`` / ``yhat, y``). ``info`` lets stages leave
    results for later ones (e.g. the gradient-equivalence signature). The
    tree is compiled when the candidate is made: do not change it afterwards.
    """

    kind: Kind
    tree: gp.PrimitiveTree
    program: CompiledTree = field(init=False, repr=False)
    loss: Callable[..., torch.Tensor] = field(init=False, repr=False)
    info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.program = compile_tree(self.kind, self.tree)
        self.loss = reduced_loss(self.kind.name, self.program)

    @property
    def formula(self) -> str:
        return self.program.text

    @property
    def reads_prediction(self) -> bool:
        """Whether the tree has the prediction leaf; without it the loss cannot depend on it."""
        return self.kind.prediction in self.program.inputs_used


class Stage(Protocol):
    """A filter stage: ``name`` and a verdict for a candidate."""

    name: str

    def __call__(self, candidate: Candidate) -> StageResult: ...

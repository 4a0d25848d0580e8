"""How a branch's raw output becomes its scalar loss: the kinds' reductions, and a task's own.

A compiled branch returns its raw output ``o`` (one value per element, see
:class:`~gp_loss.language.compile.CompiledTree`). Each kind reduces it as in
AutoLoss-Zero (Li et al., CVPR 2022, Eq. 2), with no division by the number of
classes (as with cross-entropy):

- ``cls``, ``bcls`` (:data:`PER_SAMPLE`): o is N×C (or N×1 per sample);
  ``L = o.sum() / N``: sum over classes, mean over samples;
- ``reg`` (:data:`PER_BOX_PAIR`): o is N (one value per box pair); ``L = o.mean()``;
- ``zero`` (:data:`PER_PIXEL`): o is N×C×H×W; ``L = o.sum() / (N*H*W)``.

**The rule.** The kind's reduction (its :class:`~gp_loss.kinds.KindSpec`'s
``reduction``) is the default. A task may apply its own ``normaliser(o) ->
scalar`` to a branch's raw output instead, e.g. a detector's ``o.sum() /
num_foreground`` (``compile_loss(kind, tree, normaliser=...)``): the task then
trains with that. The filters always judge a candidate with its kind's reduction,
whatever a task will use: a loss is kept or rejected for its shape, not its scale.

Every :class:`Reduction` is a constant times ``o.sum()`` whose constant divides
by the number of rows ``o.shape[0]`` (:meth:`Reduction.scale`): the gradient of
the loss with respect to every output element is that constant, and the mean of
the losses of B batches of equal size is their rows merged into one batch. The
rejection protocol relies on both (:mod:`gp_loss.filters.probe_gradient`): it
merges the B samples into rows, or, for a kind whose operators take a leading
sample dimension (:attr:`~gp_loss.kinds.KindSpec.stacks_samples`), stacks them
and sums ``o.sum() * scale(one sample's shape)``; a task's normaliser of any
other form is differentiated by autograd, sample by sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Reduction:
    """A kind's reduction: ``reduction(o) -> scalar`` and what exported code and docs show of it.

    ``reduce(o)`` computes it; ``scale(shape)`` is the constant ``c`` with
    ``reduce(o) == c * o.sum()`` for an output of ``shape``; ``source`` is the
    same rule as Python text in ``o`` (exported code); ``doc`` says it in words.
    """

    reduce: Callable[[torch.Tensor], torch.Tensor]
    scale: Callable[[tuple[int, ...]], float]
    source: str
    doc: str

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        return self.reduce(o)


PER_SAMPLE = Reduction(
    reduce=lambda o: o.sum() / o.shape[0],
    scale=lambda shape: 1.0 / shape[0],
    source="o.sum() / o.shape[0]",
    doc="sum over classes, mean over samples",
)

PER_BOX_PAIR = Reduction(
    reduce=lambda o: o.mean(),
    scale=lambda shape: 1.0 / math.prod(shape),
    source="o.mean()",
    doc="mean over box pairs",
)

PER_PIXEL = Reduction(
    reduce=lambda o: o.sum() / (o.shape[0] * o.shape[2] * o.shape[3]),
    scale=lambda shape: 1.0 / (shape[0] * shape[2] * shape[3]),
    source="o.sum() / (o.shape[0] * o.shape[2] * o.shape[3])",
    doc="sum over all elements / (N*H*W)",
)

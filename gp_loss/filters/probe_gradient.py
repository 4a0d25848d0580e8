"""A candidate's total loss on the B rejection samples, and its gradient with respect to their predictions.

The rejection protocol optimises the B samples' predictions under this total,
and the gradient-equivalence signature is the per-sample norm of its gradient
at the initial predictions. The total is the sum of the B per-sample losses, so
row b of its gradient (B×S) is exactly the gradient of sample b's own loss.
"""
from __future__ import annotations

from typing import Callable

import torch

from gp_loss.kinds import kind_spec
from gp_loss.language.compile import ReducedLoss
from gp_loss.probes.rejection import RejectionSamples
from gp_loss.reduction import Reduction

LossFn = Callable[..., torch.Tensor]


def loss_and_grad(samples: RejectionSamples, loss: LossFn,
                  prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total loss, d total / d prediction (B×S))`` at ``prediction``.

    Raises ``ValueError`` if the loss is not a scalar or does not depend on the prediction.
    """
    if (isinstance(loss, ReducedLoss) and isinstance(loss.normaliser, Reduction)
            and not kind_spec(samples.kind_name).mixes_batch):
        return _merged_raw_loss_and_grad(samples, loss, prediction)
    with torch.enable_grad():  # also when called under torch.no_grad()
        p = prediction.detach().requires_grad_(True)
        total = _sum_of_sample_losses(samples, loss, p)
    if not isinstance(total, torch.Tensor) or total.dim() != 0:
        raise ValueError("loss is not a scalar")
    if not total.requires_grad:
        raise ValueError("loss does not depend on the prediction")
    (grad,) = torch.autograd.grad(total, p, allow_unused=True)
    if grad is None:
        raise ValueError("loss does not depend on the prediction")
    return total.detach(), grad


def _sum_of_sample_losses(samples: RejectionSamples, loss: LossFn, prediction: torch.Tensor) -> torch.Tensor:
    """The loss of each sample on its own inputs, summed: one call per sample.

    Correct for any loss: one whose operators aggregate over the batch (``zero``'s
    ``mean_nhw``) or whose normaliser is not a per-row mean sees each sample alone.
    """
    inputs = samples.make_inputs(prediction)
    total = loss(*(t[0] for t in inputs))
    for k in range(1, samples.size):
        total = total + loss(*(t[k] for t in inputs))
    return total


def _merged_raw_loss_and_grad(samples: RejectionSamples, loss: ReducedLoss,
                              prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`loss_and_grad` of a loss reduced by a :class:`~gp_loss.reduction.Reduction`, in one call.

    The kind's operators work row by row and a reduction divides by the number of
    rows, so the loss of the B*N merged rows is the mean of the B sample losses:
    times B, their sum. That total is ``c * sum(o)`` for the raw output ``o`` on
    the merged rows (``c``: the reduction's scale times B), so its gradient is
    that of ``o`` with every element's upstream gradient ``c``. Autograd then
    starts at the tree's root, without the reduction's scalar nodes, and one
    call instead of B keeps the protocol cheap.
    """
    b = samples.size
    with torch.enable_grad():
        p = prediction.detach().requires_grad_(True)
        out = loss.raw(*[t.flatten(0, 1) for t in samples.make_inputs(p)])
    if not isinstance(out, torch.Tensor) or out.dim() == 0:
        raise ValueError("loss is not a scalar")
    if not out.requires_grad:
        raise ValueError("loss does not depend on the prediction")
    scale = loss.normaliser.scale(tuple(out.shape)) * b
    total = out.detach().sum() * scale
    (grad,) = torch.autograd.grad(out, p, grad_outputs=torch.full_like(out, scale), allow_unused=True)
    if grad is None:
        raise ValueError("loss does not depend on the prediction")
    return total, grad

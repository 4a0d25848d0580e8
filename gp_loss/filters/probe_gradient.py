"""A candidate's total loss on the B rejection samples, and its gradient with respect to their predictions.

The rejection protocol optimises the B samples' predictions under this total,
and the gradient-equivalence signature is the per-sample norm of its gradient
at the initial predictions. The total is the sum of the B per-sample losses, so
row b of its gradient (B×S) is exactly the gradient of sample b's own loss.

Three ways to get it, all equal up to float rounding; :func:`loss_and_grad`
picks the cheapest that is correct for the loss, by its kind's
:attr:`~gp_loss.kinds.KindSpec.stacks_samples` (the one place for the rule) and
its normaliser:

- **stacked** (``stacks_samples``, a :class:`~gp_loss.reduction.Reduction`):
  one call on the B×N×... inputs; the kind's operators treat the leading
  sample dimension as a batch of batches, so each sample is seen alone
  (:func:`_stacked_raw_loss_and_grad`);
- **merged** (not ``stacks_samples``, a ``Reduction``): one call on the B*N
  merged rows; the kind's operators work row by row
  (:func:`_merged_raw_loss_and_grad`);
- **per sample** (a task's normaliser of any other form): one call per sample
  (:func:`per_sample_loss_and_grad`), correct for any loss.
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
    if isinstance(loss, ReducedLoss) and isinstance(loss.normaliser, Reduction):
        if kind_spec(samples.kind_name).stacks_samples:
            return _stacked_raw_loss_and_grad(samples, loss, prediction)
        return _merged_raw_loss_and_grad(samples, loss, prediction)
    return per_sample_loss_and_grad(samples, loss, prediction)


def per_sample_loss_and_grad(samples: RejectionSamples, loss: LossFn,
                             prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`loss_and_grad` with one call of ``loss`` per sample, whatever the loss and its kind.

    The reference the one-call paths are tested against, and the path of a
    normaliser that is not a :class:`~gp_loss.reduction.Reduction`.
    """
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


def _stacked_raw_loss_and_grad(samples: RejectionSamples, loss: ReducedLoss,
                               prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`loss_and_grad` of a loss of a kind that stacks samples, reduced by a ``Reduction``: one call.

    The kind's operators take the stacked inputs B×N×... and aggregate within
    each sample only (:attr:`~gp_loss.kinds.KindSpec.stacks_samples`), so the
    raw output ``o`` (B×N×...) holds each sample's own output ``o_b``. Sample
    b's loss is ``c * sum(o_b)`` with ``c`` the reduction's scale for one
    sample's shape (``o.shape[1:]``), so the total is ``c`` times the sum of the
    B per-sample sums, and its gradient is that of ``o`` with every element's
    upstream gradient ``c``: autograd starts at the tree's root, without the
    reduction's scalar nodes, once for all B samples.
    """
    b = samples.size
    with torch.enable_grad():
        p = prediction.detach().requires_grad_(True)
        out = loss.raw(*samples.make_inputs(p))
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != b:
        # Not one output per sample (the kinds' trees always give one): let the
        # per-sample path judge the loss as it stands.
        return per_sample_loss_and_grad(samples, loss, prediction)
    if not out.requires_grad:
        raise ValueError("loss does not depend on the prediction")
    scale = loss.normaliser.scale(tuple(out.shape[1:]))
    detached = out.detach()
    # Each sample's sum first, as its own loss sums it: a total of B finite losses stays finite.
    total = (detached.sum(dim=tuple(range(1, out.dim()))) * scale).sum()
    (grad,) = torch.autograd.grad(out, p, grad_outputs=torch.full_like(out, scale), allow_unused=True)
    if grad is None:
        raise ValueError("loss does not depend on the prediction")
    return total, grad


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

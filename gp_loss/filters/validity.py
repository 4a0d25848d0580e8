"""Validity stage: finite loss, finite non-zero gradient, depends on prediction and target."""
from __future__ import annotations

import time

import torch
from deap import gp

from primitives import Kind

from gp_loss.filters.base import Candidate, KindBatches, StageResult, rejection_reason


class ValidityStage:
    """Evaluate the candidate once on its kind's sample batch (:meth:`~gp_loss.kinds.KindSpec.sample_batch`).

    Rejects a loss whose value is not a finite scalar, whose gradient with
    respect to the prediction is not finite or is zero everywhere (it ignores
    the prediction), or whose value does not change when the target changes
    (it ignores the target; relative tolerance ``rel_tol``).
    """

    name = "validity"

    def __init__(self, seed: int = 0, rel_tol: float = 1e-6, device: str | torch.device = "cpu"):
        self.seed, self.rel_tol, self.device = seed, rel_tol, device
        self.batch = KindBatches(seed, device)

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s sample batch."""
        self.batch(kind_name)

    def __call__(self, candidate: Candidate) -> StageResult:
        start = time.perf_counter()

        def result(passed: bool, reason: str, **numbers) -> StageResult:
            return StageResult(self.name, passed, reason, numbers, time.perf_counter() - start)

        # Structural shortcut (same verdict, no tensor work): a tree without the
        # prediction leaf cannot depend on it (in the default order the convergence
        # stage has already rejected most such trees).
        if not candidate.reads_prediction:
            return result(False, "loss does not depend on the prediction")
        batch = self.batch(candidate.kind.name)
        try:
            value = candidate.loss(*batch.inputs())
            if value.dim() != 0:
                return result(False, f"output is not a scalar (shape {tuple(value.shape)})")
            if not torch.isfinite(value):
                return result(False, f"loss is {value.item()} on sample inputs")
            if not value.requires_grad:
                return result(False, "loss does not depend on the prediction", loss=value.item())
            (grad,) = torch.autograd.grad(value, batch.prediction, allow_unused=True)
            if grad is None:
                return result(False, "loss does not depend on the prediction", loss=value.item())
            if not torch.isfinite(grad).all():
                return result(False, "gradient with respect to the prediction is not finite",
                              loss=value.item())
            grad_norm = grad.norm().item()
            if grad_norm == 0:
                return result(False, "gradient with respect to the prediction is zero", loss=value.item())
            with torch.no_grad():
                other = candidate.loss(*batch.inputs(batch.other_target)).item()
            if abs(other - value.item()) <= self.rel_tol * max(1.0, abs(value.item())):
                return result(False, "loss does not depend on the target", loss=value.item(),
                              grad_norm=grad_norm)
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, rejection_reason(err))
        return result(True, "finite loss and gradient; depends on prediction and target",
                      loss=value.item(), grad_norm=grad_norm)


def check_validity(kind: Kind, tree: gp.PrimitiveTree, seed: int = 0) -> StageResult:
    """Run :class:`ValidityStage` on one tree."""
    return ValidityStage(seed=seed)(Candidate(kind, tree))

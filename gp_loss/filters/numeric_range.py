"""Numerical-range stage: the loss and its gradient stay within a bound, in fp32 and under bf16 autocast.

A loss can be finite on random predictions and still be unusable: one that
divides by the one-hot target (plus a tiny epsilon) is about 1e20 off the
target class, and one that divides by a probability explodes once the model is
confident. Adam hides such a scale (its step does not depend on the gradient's
size), so proxy training may even rank it high, but plain SGD or mixed
precision turns it into NaN weights. This stage evaluates the candidate on its
kind's sample batch twice, at the sample prediction and at a confident one
(:class:`~gp_loss.probes.samples.SampleBatch`), each in fp32 and with bf16
inputs under ``torch.autocast``, and rejects it when a value is not finite or
its magnitude exceeds ``bound``:

* the loss of each sample (each box pair, each pixel): the raw output summed
  over its non-batch dimension;
* each element of the gradient of the summed raw output with respect to the
  prediction, which is each sample's own gradient (independent of batch size
  and of the reduction).

Every handcrafted loss of the papers passes with orders of magnitude to spare
(the tests check them all).
"""
from __future__ import annotations

import time

import torch

from gp_loss.filters.base import Candidate, KindBatches, StageResult, rejection_reason

DEFAULT_BOUND = 1e4


def _per_sample(raw: torch.Tensor) -> torch.Tensor:
    """Each sample's (box pair's, pixel's) loss: the raw output summed over its class dimension."""
    return raw.sum(1) if raw.dim() > 1 else raw


class RangeStage:
    """Reject a loss whose per-sample value or gradient leaves ``[-bound, bound]`` or is not finite."""

    name = "range"

    def __init__(self, bound: float = DEFAULT_BOUND, seed: int = 0, device: str | torch.device = "cpu"):
        if not bound > 0:
            raise ValueError(f"the range bound must be positive, got {bound}")
        self.bound = float(bound)
        self.device = torch.device(device)
        self.batches = KindBatches(seed, device)

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s sample batch."""
        self.batches(kind_name)

    def __call__(self, candidate: Candidate) -> StageResult:
        start = time.perf_counter()
        batch = self.batches(candidate.kind.name)
        largest = {"loss": 0.0, "grad": 0.0}
        try:
            for where, prediction in (("sample", batch.prediction), ("confident", batch.confident)):
                for precision in ("fp32", "bf16"):
                    problem = self._measure(candidate, batch, prediction, precision, largest)
                    if problem:
                        return StageResult(self.name, False, f"{problem} at the {where} prediction in {precision}",
                                           dict(largest), time.perf_counter() - start)
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return StageResult(self.name, False, rejection_reason(err), dict(largest),
                               time.perf_counter() - start)
        return StageResult(self.name, True, f"loss and gradient within ±{self.bound:g} in fp32 and bf16",
                           dict(largest), time.perf_counter() - start)

    def _measure(self, candidate: Candidate, batch, prediction: torch.Tensor, precision: str,
                 largest: dict[str, float]) -> str:
        """The first problem of one evaluation ("" if none); ``largest`` keeps the largest magnitudes seen."""
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        leaf = prediction.detach().to(dtype).requires_grad_()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            inputs = [t.to(dtype) if t.is_floating_point() and t is not leaf else t
                      for t in batch.make(leaf, batch.target)]
            raw = candidate.program(*inputs)
        losses = _per_sample(raw).float()
        if not torch.isfinite(losses).all():
            return "loss is not finite"
        loss_max = losses.abs().max().item()
        largest["loss"] = max(largest["loss"], loss_max)
        if loss_max > self.bound:
            return f"loss reaches {loss_max:.3g} (bound {self.bound:g})"
        if not raw.requires_grad:
            return ""  # the validity stage judges dependence on the prediction
        (grad,) = torch.autograd.grad(raw.sum(), leaf, allow_unused=True)
        if grad is None:
            return ""
        grad = grad.float()
        if not torch.isfinite(grad).all():
            return "gradient is not finite"
        grad_max = grad.abs().max().item()
        largest["grad"] = max(largest["grad"], grad_max)
        if grad_max > self.bound:
            return f"gradient reaches {grad_max:.3g} (bound {self.bound:g})"
        return ""

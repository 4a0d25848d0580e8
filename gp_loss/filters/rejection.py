"""Loss-rejection protocol (AutoLoss-Zero, Li et al., CVPR 2022, section 3.2, Eq. 3).

For the candidate's kind, take the B samples of its probe (predictions of a
randomly initialised network and their targets, :mod:`gp_loss.probes.rejection`),
minimise the candidate loss over the predictions themselves (not the network)
for a few Adam steps, and score

    g = (1/B) * sum_b [ metric(optimised prediction_b) - metric(prediction_b) ].

A loss with ``g < eta`` is rejected: minimising it does not improve the
metric. All B samples are optimised together: the protocol minimises the sum
of the B per-sample losses, whose gradient for sample b is that of sample b's
own loss, so the samples do not interact (Adam is element-wise too).

The first step's gradient gives the gradient-equivalence signature for free;
it is left in ``candidate.info["signature"]`` for the equivalence stage.
"""
from __future__ import annotations

import math
import time

import torch

from gp_loss.filters.base import Candidate, StageResult, rejection_reason
from gp_loss.filters.equivalence import signature_of_gradient
from gp_loss.filters.probe_gradient import loss_and_grad
from gp_loss.kinds import kind_spec
from gp_loss.probes.rejection import RejectionProbe, RejectionSamples

DEFAULT_ETA = 0.1
DEFAULT_STEPS = 20


class RejectionStage:
    """Reject candidates whose minimisation does not raise the probe's metric.

    Args:
        seed: seed of the probe samples (network initialisation, data picks).
        steps: Adam steps on the predictions.
        eta: threshold on the mean metric gain g; reject if ``g < eta``. The
            default 0.1 rejects losses that leave the metric unchanged (e.g.
            a target-independent shift of all logits, whose gain is 0) or
            move it by chance (random trees gain a few hundredths either way),
            while every paper loss gains far more (tests/filters/test_rejection.py
            asserts it).
        probes: probe per kind name; kinds not given use their spec's
            (:attr:`~gp_loss.kinds.KindSpec.rejection_probe`).
        betas, eps: Adam's constants. Adam's step is about ``lr`` whatever the
            scale of the loss, so ``3 * L`` and ``L`` are judged alike.
    """

    name = "rejection"

    def __init__(self, seed: int = 0, steps: int = DEFAULT_STEPS, eta: float = DEFAULT_ETA,
                 probes: dict[str, RejectionProbe] | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.seed, self.steps, self.eta = seed, steps, eta
        self.probes = dict(probes or {})
        self.betas, self.eps = betas, eps
        self._samples: dict[str, RejectionSamples] = {}
        self._initial_metric: dict[str, torch.Tensor] = {}

    def samples(self, kind_name: str) -> RejectionSamples:
        """The probe samples of a kind, built once per stage."""
        if kind_name not in self._samples:
            probe = self.probes.get(kind_name) or kind_spec(kind_name).rejection_probe()
            samples = probe.make_samples(self.seed)
            self._samples[kind_name] = samples
            self._initial_metric[kind_name] = samples.metric(samples.prediction)
        return self._samples[kind_name]

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s probe samples."""
        self.samples(kind_name)

    def __call__(self, candidate: Candidate) -> StageResult:
        start = time.perf_counter()

        def result(passed: bool, reason: str, **numbers) -> StageResult:
            return StageResult(self.name, passed, reason, numbers, time.perf_counter() - start)

        try:
            samples = self.samples(candidate.kind.name)
            return self._judge(candidate, samples, result)
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, rejection_reason(err))

    def _judge(self, candidate: Candidate, samples: RejectionSamples, result) -> StageResult:
        b1, b2 = self.betas
        lr = samples.lr
        pred = samples.prediction.clone()
        m = torch.zeros_like(pred)
        v = torch.zeros_like(pred)
        first = last = float("nan")
        # Outside autograd, but for the loss and its gradient (loss_and_grad enables it).
        with torch.no_grad():
            for t in range(1, self.steps + 1):
                total, grad = loss_and_grad(samples, candidate.loss, pred)
                value = total.item()
                if not math.isfinite(value):
                    return result(False, f"loss is {value} at step {t} of the optimisation", step=t)
                if t == 1:
                    # Later non-finite gradients show as a non-finite loss at the
                    # next step or a non-finite prediction at the end.
                    if not bool(torch.isfinite(grad).all()):
                        return result(False, "gradient is not finite at the initial prediction", loss=value)
                    first = value
                    candidate.info["signature"] = signature_of_gradient(grad)
                    candidate.info["signature_seed"] = self.seed
                last = value
                # Adam, in place on the prediction (cheaper than torch.optim here).
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                # pow(0.5) rather than sqrt: torch's sqrt goes through MKL's
                # threaded vector maths, which stalls for milliseconds on tiny
                # tensors when the cores are busy (e.g. parallel workers).
                denom = (v / (1 - b2 ** t)).pow_(0.5).add_(self.eps)
                pred.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))
        if not bool(torch.isfinite(pred).all()):
            return result(False, "prediction is not finite after the optimisation", loss_last=last)
        before = self._initial_metric[samples.kind_name]
        after = samples.metric(pred)
        if not bool(torch.isfinite(after).all()):
            return result(False, "metric is not finite after the optimisation")
        gain = (after - before).mean().item()
        numbers = dict(gain=gain, metric_before=before.mean().item(), metric_after=after.mean().item(),
                       loss_first=first, loss_last=last)
        if gain < self.eta:
            return result(False, f"metric gain {gain:.3g} < eta {self.eta:g}", **numbers)
        return result(True, f"metric gain {gain:.3g} >= eta {self.eta:g}", **numbers)

"""Sample inputs for each kind of branch, as the search feeds them.

Used by ``gp-loss check`` and the candidate filters. Every batch keeps the
prediction as a leaf tensor (``requires_grad``) so gradients can be checked
with respect to it, and can rebuild its inputs for another target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gp_loss.boxes import paired_areas


@dataclass
class SampleBatch:
    """Inputs of one kind, in argument order, built from a prediction and a target.

    ``make(prediction, target)`` returns the input tuple; ``prediction`` is a
    leaf tensor, so ``loss(*batch.inputs())`` can be differentiated against it.
    """

    prediction: torch.Tensor
    target: object
    make: Callable[[torch.Tensor, object], tuple[torch.Tensor, ...]]
    other_target: object  # a different target of the same shape

    def inputs(self, target=None) -> tuple[torch.Tensor, ...]:
        return self.make(self.prediction, self.target if target is None else target)


def _cls(n: int, c: int, g: torch.Generator, device) -> SampleBatch:
    # Last class is background; positives carry the IoU of their box (>= 1e-7).
    labels = torch.randint(0, c, (n,), generator=g).to(device)
    iou = (0.3 + 0.7 * torch.rand(n, generator=g)).to(device)
    x = (2 * torch.randn(n, c, generator=g)).to(device).requires_grad_()

    def make(pred, lab):
        y = torch.nn.functional.one_hot(lab, c).to(pred.dtype)
        w = torch.where((lab < c - 1)[:, None], iou[:, None].clamp(min=1e-7), torch.ones_like(iou)[:, None])
        return pred, y, w.expand(n, c)

    return SampleBatch(x, labels, make, (labels + 1) % c)


def _bcls(n: int, c: int, g: torch.Generator, device) -> SampleBatch:
    # Label c means background (all-zero target row).
    labels = torch.randint(0, c + 1, (n,), generator=g).to(device)
    iou = (0.3 + 0.7 * torch.rand(n, generator=g)).to(device)
    x = (2 * torch.randn(n, c, generator=g)).to(device).requires_grad_()

    def make(pred, lab):
        y = torch.nn.functional.one_hot(lab, c + 1)[:, :c].to(pred.dtype)
        return pred, y, y * iou[:, None]

    return SampleBatch(x, labels, make, (labels + 1) % (c + 1))


def _reg(n: int, g: torch.Generator, device) -> SampleBatch:
    xy = 50 * torch.rand(n, 2, generator=g)
    wh = 5 + 30 * torch.rand(n, 2, generator=g)
    target = torch.cat([xy, xy + wh], 1).to(device)
    pred = (target + 0.25 * wh.repeat(1, 2).to(device) * torch.randn(n, 4, generator=g).to(device))
    pred = torch.cat([pred[:, :2], torch.max(pred[:, 2:], pred[:, :2] + 1)], 1).detach().requires_grad_()
    shifted = target + torch.cat([wh, wh], 1).to(device) * 0.3

    return SampleBatch(pred, target, lambda p, t: paired_areas(p, t), shifted)


def _zero(n: int, c: int, hw: int, g: torch.Generator, device) -> SampleBatch:
    labels = torch.randint(0, c, (n, hw, hw), generator=g).to(device)
    yhat = torch.randn(n, c, hw, hw, generator=g).to(device).requires_grad_()

    def make(pred, lab):
        y = torch.nn.functional.one_hot(lab, c).permute(0, 3, 1, 2).to(pred.dtype)
        return pred, y

    return SampleBatch(yhat, labels, make, (labels + 1) % c)


def sample_batch(kind_name: str, seed: int = 0, device: str | torch.device = "cpu",
                 n: int = 16, classes: int = 5, size: int = 8) -> SampleBatch:
    """A deterministic sample batch for ``kind_name`` (``cls``, ``bcls``, ``reg``, ``zero``)."""
    g = torch.Generator().manual_seed(seed)
    if kind_name == "cls":
        return _cls(n, classes, g, device)
    if kind_name == "bcls":
        return _bcls(n, classes, g, device)
    if kind_name == "reg":
        return _reg(n, g, device)
    if kind_name == "zero":
        return _zero(max(2, n // 8), classes, size, g, device)
    raise ValueError(f"no sample inputs for kind {kind_name!r}")

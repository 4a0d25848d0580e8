"""One sample batch per kind, as the search feeds a branch: the validity stage's probe.

Also what ``gp-loss check`` and the tests evaluate losses on. Every batch keeps the
prediction as a leaf tensor (``requires_grad``) so gradients can be taken with
respect to it, and can rebuild its inputs for another target. A builder takes a
seeded generator, the device and the sizes ``n`` (rows), ``classes`` and ``size``
(pixels a side), ignoring those its kind has not (boxes have no classes);
:meth:`gp_loss.kinds.KindSpec.sample_batch` seeds and calls it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gp_loss.probes.boxes import convert, paired_areas
from gp_loss.probes.digits import dense_one_hot, iou_like


@dataclass
class SampleBatch:
    """Inputs of one kind, in argument order, built from a prediction and a target.

    ``make(prediction, target)`` returns the input tuple; ``prediction`` is a
    leaf tensor, so ``loss(*batch.inputs())`` can be differentiated against it.
    ``confident`` is a prediction of the same shape as a model makes late in
    training (large logits, right or wrong; boxes almost on their targets), where
    a loss that divides by a vanishing quantity blows up.
    """

    prediction: torch.Tensor
    target: object
    make: Callable[[torch.Tensor, object], tuple[torch.Tensor, ...]]
    other_target: object  # a different target of the same shape
    confident: torch.Tensor

    def inputs(self, target=None) -> tuple[torch.Tensor, ...]:
        return self.make(self.prediction, self.target if target is None else target)


# Logits this many times the sample's (standard deviation 2): softmax probabilities within
# e**-40 of 0 or 1, as a model reaches on easy samples late in training.
CONFIDENT_SCALE = 8.0
# Predicted boxes this fraction of their sample offset away from their targets (IoU about 0.99).
CONFIDENT_BOX_OFFSET = 0.01

# (generator, device, n, classes, size) -> batch
SampleBuilder = Callable[[torch.Generator, str | torch.device, int, int, int], SampleBatch]


def softmax_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``cls``: logits ``x`` n×classes, one-hot ``y``; the last class is background.

    ``w`` is the IoU of a positive's box (>= 1e-7) and 1 for background, over every class.
    """
    c = classes
    labels = torch.randint(0, c, (n,), generator=g).to(device)
    iou = iou_like((n,), g).to(device)
    x = (2 * torch.randn(n, c, generator=g)).to(device).requires_grad_()

    def make(pred, lab):
        y = F.one_hot(lab, c).to(pred.dtype)
        w = torch.where((lab < c - 1)[:, None], iou[:, None].clamp(min=1e-7), torch.ones_like(iou)[:, None])
        return pred, y, w.expand(n, c)

    return SampleBatch(x, labels, make, (labels + 1) % c, CONFIDENT_SCALE * x.detach())


def sigmoid_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``bcls``: logits ``x`` n×classes, binary ``y``; label ``classes`` is background (an all-zero row).

    ``w`` is the IoU at the target class, 0 elsewhere.
    """
    c = classes
    labels = torch.randint(0, c + 1, (n,), generator=g).to(device)
    iou = iou_like((n,), g).to(device)
    x = (2 * torch.randn(n, c, generator=g)).to(device).requires_grad_()

    def make(pred, lab):
        y = F.one_hot(lab, c + 1)[:, :c].to(pred.dtype)
        return pred, y, y * iou[:, None]

    return SampleBatch(x, labels, make, (labels + 1) % (c + 1), CONFIDENT_SCALE * x.detach())


def box_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``reg``: n predicted boxes around their targets (pixel scale); inputs ``i, u, e`` (each n)."""
    xy = 50 * torch.rand(n, 2, generator=g)
    wh = 5 + 30 * torch.rand(n, 2, generator=g)
    target = convert(torch.cat([xy, wh], 1), "xywh", "xyxy").to(device)
    pred = (target + 0.25 * wh.repeat(1, 2).to(device) * torch.randn(n, 4, generator=g).to(device))
    pred = torch.cat([pred[:, :2], torch.max(pred[:, 2:], pred[:, :2] + 1)], 1).detach().requires_grad_()
    shifted = target + torch.cat([wh, wh], 1).to(device) * 0.3
    near = target + CONFIDENT_BOX_OFFSET * (pred.detach() - target)
    return SampleBatch(pred, target, paired_areas, shifted, near)


def dense_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``zero``: logits ``yhat`` and one-hot ``y``, each N×classes×size×size, N = n/8 (at least 2).

    Fewer images than rows elsewhere: each carries size×size pixels.
    """
    images = max(2, n // 8)
    labels = torch.randint(0, classes, (images, size, size), generator=g).to(device)
    yhat = torch.randn(images, classes, size, size, generator=g).to(device).requires_grad_()

    def make(pred, lab):
        return pred, dense_one_hot(lab, classes).to(pred.dtype)

    return SampleBatch(yhat, labels, make, (labels + 1) % classes, CONFIDENT_SCALE * yhat.detach())

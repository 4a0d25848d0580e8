"""The sweeps of the report's loss curves: a branch's loss and gradient along what the papers draw.

Each kind picks its sweeps in its :class:`~gp_loss.kinds.KindSpec` (``curve_sweeps``), each a batch
of inputs along one abscissa, as CSE-Autoloss plots loss against the probability of the true class:

- ``cls`` (:data:`SOFTMAX_SWEEPS`; softmax over :data:`CLASSES` classes, true class 0, ``w = 1``):
  the true class's probability rising (the other logits equal), and a confusing class's
  probability rising (the true class's logit fixed among equal others);
- ``bcls`` (:data:`SIGMOID_SWEEPS`; one sigmoid column): a positive (``y = 1, w = 1``) and a
  negative (``y = 0, w = 0``, as the convergence probe's negatives) against the predicted probability;
- ``reg`` (:data:`BOX_SWEEPS`): a 20×20 px target and the box the detector predicts from it with
  Faster R-CNN's deltas, shifted diagonally (``dx = dy`` from 0 to 0.99 box sizes) and grown
  (``dw = dh`` from 0 to ln 4), against the IoU;
- ``zero`` (:data:`PIXEL_SWEEPS`): one pixel of :data:`CLASSES` classes, the true class's
  probability rising.

Everything is float64. :mod:`gp_loss.report.curves` evaluates a loss along them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

CLASSES = 10  # the default classification task's digits; also the zero sweep's classes
POINTS = 99
DTYPE = torch.float64
TARGET_BOX = (10.0, 10.0, 30.0, 30.0)  # x1, y1, x2, y2: 20×20 px


@dataclass(frozen=True)
class Sweep:
    """One sweep: ``make()`` returns ``(abscissa, predicted, inputs_of)``.

    ``predicted`` is the tensor the gradient is taken against (requires grad);
    ``inputs_of(predicted)`` gives the kind's inputs in order. ``one_at_a_time``:
    evaluate each point as its own batch (a kind whose operators mix the batch).
    """

    key: str
    title: str
    xlabel: str
    grad_label: str
    make: Callable[[], tuple[np.ndarray, torch.Tensor, Callable[[torch.Tensor], tuple[torch.Tensor, ...]]]]
    one_at_a_time: bool = False


def _probabilities(points: int = POINTS) -> np.ndarray:
    return np.linspace(0.01, 0.99, points)


def _logit_for(p: np.ndarray, others: int) -> torch.Tensor:
    """The logit that gives one class probability ``p`` against ``others`` classes at logit 0."""
    return torch.tensor(np.log(p * others / (1 - p)), dtype=DTYPE)


def _softmax(swept: int) -> Callable[[], tuple]:
    """True class 0; the logit of class ``swept`` gives it probability p (0: the true class rising)."""
    def make() -> tuple:
        p = _probabilities()
        x = torch.zeros(len(p), CLASSES, dtype=DTYPE)
        x[:, swept] = _logit_for(p, CLASSES - 1)
        x.requires_grad_(True)
        y = torch.zeros_like(x, requires_grad=False)
        y[:, 0] = 1
        w = torch.ones_like(y)
        return p, x, lambda pred: (pred, y, w)
    return make


def _sigmoid(target: float) -> Callable[[], tuple]:
    def make() -> tuple:
        p = _probabilities()
        x = torch.tensor(np.log(p / (1 - p)), dtype=DTYPE)[:, None].requires_grad_(True)
        y = torch.full_like(x, target, requires_grad=False)
        w = torch.full_like(x, target, requires_grad=False)  # positives w = 1 (IoU), negatives w = 0
        return p, x, lambda pred: (pred, y, w)
    return make


def _boxes(direction: str) -> Callable[[], tuple]:
    def make() -> tuple:
        from gp_loss.probes.boxes import convert, decode, paired_areas
        # (from just off the target: at it, min and max in the areas tie and autograd's gradient is 0)
        t = torch.linspace(0.005, 1, POINTS, dtype=DTYPE)
        deltas = torch.zeros(POINTS, 4, dtype=DTYPE)
        if direction == "shift":
            deltas[:, 0] = deltas[:, 1] = 0.99 * t  # diagonally, up to just short of no overlap
        else:
            deltas[:, 2] = deltas[:, 3] = math.log(4) * t
        deltas.requires_grad_(True)
        target = torch.tensor([TARGET_BOX], dtype=DTYPE).expand(POINTS, 4)
        anchor = convert(target, "xyxy", "cxcywh")

        def inputs_of(pred_deltas: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return paired_areas(decode(anchor, pred_deltas), target)

        with torch.no_grad():
            i, u, _ = inputs_of(deltas)
        return (i / u).numpy(), deltas, inputs_of
    return make


def _pixel_true() -> tuple:
    p = _probabilities()
    yhat = torch.zeros(len(p), CLASSES, 1, 1, dtype=DTYPE)
    yhat[:, 0, 0, 0] = _logit_for(p, CLASSES - 1)
    yhat.requires_grad_(True)
    y = torch.zeros_like(yhat, requires_grad=False)
    y[:, 0] = 1
    return p, yhat, lambda pred: (pred, y)


SOFTMAX_SWEEPS: tuple[Sweep, ...] = (
    Sweep("true", "true class's probability rising", "probability of the true class $p_t$",
          "$\\|\\partial L / \\partial x\\|$ (logits)", _softmax(0)),
    Sweep("confusing", "a confusing class's probability rising", "probability of a wrong class $p_j$",
          "$\\|\\partial L / \\partial x\\|$ (logits)", _softmax(1)),
)
SIGMOID_SWEEPS: tuple[Sweep, ...] = (
    Sweep("positive", "positive (y = 1, w = 1)", "predicted probability $\\sigma(x)$",
          "$|\\partial L / \\partial x|$ (logit)", _sigmoid(1.0)),
    Sweep("negative", "negative (y = 0, w = 0)", "predicted probability $\\sigma(x)$",
          "$|\\partial L / \\partial x|$ (logit)", _sigmoid(0.0)),
)
BOX_SWEEPS: tuple[Sweep, ...] = (
    Sweep("shift", "box shifted diagonally off its target", "IoU with the target",
          "$\\|\\partial L / \\partial \\delta\\|$ (box deltas)", _boxes("shift")),
    Sweep("scale", "box grown about its target", "IoU with the target",
          "$\\|\\partial L / \\partial \\delta\\|$ (box deltas)", _boxes("scale")),
)
PIXEL_SWEEPS: tuple[Sweep, ...] = (
    Sweep("true", "one pixel, true class's probability rising", "probability of the true class $p_t$",
          "$\\|\\partial L / \\partial \\hat{y}\\|$ (logits)", _pixel_true, one_at_a_time=True),
)

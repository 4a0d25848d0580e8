"""The model-optimisation simulation's problem per kind: a tiny model, its data and metric.

CSE-Autoloss (Liu et al., ICLR 2021, "Model Optimization Simulation") trains
briefly with each surviving candidate on as many images as there are classes.
Each problem here is small enough to train for a few dozen steps in a fraction
of a second on a CPU:

- ``cls``: :class:`SmallCNN` on :func:`~gp_loss.data.digits.one_per_class`
  digits (10 images, 10 classes), softmax logits; metric = training accuracy.
- ``bcls``: the same network and images, logits read as 10 independent
  sigmoids; metric = training accuracy (argmax over classes).
- ``reg``: a linear box regressor from a fixed random feature per sample to
  box deltas applied to anchors, trained through ``i, u, e``; metric = mean IoU.
- ``zero``: :class:`SmallCNN` with ``dense=True`` segmenting the digits by
  pixel intensity (:func:`~gp_loss.probes.digits.intensity_classes`); metric = mIoU.

A builder takes ``(seed, device)``; the model's initialisation draws from the
global RNG, which the stage seeds (and restores) around the call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gp_loss.data.digits import NUM_CLASSES, one_per_class
from gp_loss.models.small_cnn import SmallCNN
from gp_loss.probes.boxes import convert, decode, paired_areas
from gp_loss.probes.digits import INTENSITY_CLASSES, dense_one_hot, intensity_classes, iou_like
from gp_loss.probes.metrics import accuracy, mean_box_iou, mean_iou

# Fixed IoU-like weights of the classification branches lie in this range, as
# positives' IoUs with their ground truth do in a detector.
_IOU_RANGE = (0.5, 0.95)


@dataclass
class SimulationProblem:
    """One kind's simulation problem.

    ``inputs(model)`` runs the model and returns the candidate's inputs in the
    kind's argument order; ``metric(model)`` scores the model (higher is better).
    ``chance`` is the metric of the best constant prediction: a loss that
    collapses the model to one class must not pass because the untrained model
    happened to score below that.
    """

    model: nn.Module  # the untrained model; each candidate trains a copy
    inputs: Callable[[nn.Module], tuple[torch.Tensor, ...]]
    metric: Callable[[nn.Module], float]
    chance: float = 0.0


def _digit_classifier(seed: int, device: str | torch.device,
                      w_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> SimulationProblem:
    """A SmallCNN on one digit per class; inputs ``x, y, w`` (each N×C), metric accuracy.

    ``w_of(y, iou)`` makes ``w`` from the one-hot targets and an IoU-like weight per image (N×1).
    """
    images, labels = one_per_class(seed)
    images, labels = images.to(device), labels.to(device)
    g = torch.Generator().manual_seed(seed)
    y = F.one_hot(labels, NUM_CLASSES).float()
    iou = iou_like((len(labels),), g, *_IOU_RANGE).to(device)[:, None]
    w = w_of(y, iou)
    model = SmallCNN(NUM_CLASSES).to(device)

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return m(images), y, w

    def metric(m: nn.Module) -> float:
        return accuracy(m(images), labels, torch.float64).item()

    # One image per class: predicting any single class is right once.
    return SimulationProblem(model, inputs, metric, chance=1 / NUM_CLASSES)


def softmax_problem(seed: int, device: str | torch.device) -> SimulationProblem:
    """``cls``: every sample is a positive, so ``w`` is its IoU broadcast over the classes."""
    return _digit_classifier(seed, device, lambda y, iou: iou.expand_as(y).contiguous())


def sigmoid_problem(seed: int, device: str | torch.device) -> SimulationProblem:
    """``bcls``: ``w`` is the IoU at the ground-truth class, 0 elsewhere."""
    problem = _digit_classifier(seed, device, lambda y, iou: y * iou)
    # RetinaNet's prior initialisation (Lin et al., ICCV 2017): every sigmoid starts at p = 1/C. Without
    # it a sigmoid loss spends its first steps pushing all logits down together
    # (9 negatives per positive), and a few dozen steps show no learning.
    nn.init.constant_(problem.model.head.bias, -math.log(NUM_CLASSES - 1))
    return problem


class BoxRegressor(nn.Module):
    """Linear map from a fixed feature (N×F) to deltas (N×4) decoded on anchors (N×4, x1 y1 x2 y2).

    Zero-initialised, so the untrained model predicts the anchors themselves.
    """

    def __init__(self, features: torch.Tensor, anchors: torch.Tensor):
        super().__init__()
        self.register_buffer("features", features)
        self.register_buffer("anchors", convert(anchors, "xyxy", "cxcywh"))
        self.linear = nn.Linear(features.shape[1], 4)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self) -> torch.Tensor:
        """Predicted boxes N×4 (x1, y1, x2, y2)."""
        return decode(self.anchors, self.linear(self.features))


def box_problem(seed: int, device: str | torch.device) -> SimulationProblem:
    """``reg``: 10 anchors with jittered targets (pixel scale); inputs i, u, e (each N)."""
    n, dim = NUM_CLASSES, 16
    g = torch.Generator().manual_seed(seed)
    # Pixel-scale boxes (tens of pixels) as in a detector: some paper losses
    # (CSE-Autoloss-A/B reg) have additive constants that assume that scale.
    centre = 30 + 40 * torch.rand(n, 2, generator=g)
    wh = 20 + 30 * torch.rand(n, 2, generator=g)
    anchors = convert(torch.cat([centre, wh], 1), "cxcywh", "xyxy")
    # Targets: centre shifted by up to 20% of the size, size scaled by e^±0.3,
    # so every anchor overlaps its target (plain IoU loss has a gradient).
    t_centre = centre + 0.4 * (torch.rand(n, 2, generator=g) - 0.5) * wh
    t_wh = wh * torch.exp(0.6 * (torch.rand(n, 2, generator=g) - 0.5))
    targets = convert(torch.cat([t_centre, t_wh], 1), "cxcywh", "xyxy").to(device)
    # Unit-norm random features: well conditioned, so 10 samples are fittable.
    features = torch.randn(n, dim, generator=g)
    features = features / features.norm(dim=1, keepdim=True)
    model = BoxRegressor(features, anchors).to(device)

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return paired_areas(m(), targets)

    def metric(m: nn.Module) -> float:
        i, u, _ = paired_areas(m(), targets)
        return mean_box_iou(i, u).item()

    return SimulationProblem(model, inputs, metric)


def segmentation_problem(seed: int, device: str | torch.device) -> SimulationProblem:
    """``zero``: per-pixel segmentation of the digits by intensity; inputs yhat (softmax), y (N×3×8×8)."""
    classes = INTENSITY_CLASSES
    images, _ = one_per_class(seed)
    images = images.to(device)
    target = intensity_classes(images)  # N×8×8
    y = dense_one_hot(target, classes)
    model = SmallCNN(classes, dense=True).to(device)

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return torch.softmax(m(images), 1), y  # yhat: probabilities, as the tasks pass them

    def metric(m: nn.Module) -> float:
        return mean_iou(m(images)[None], target[None], classes, torch.float64).item()

    # Predicting class c everywhere: IoU_c = its pixel fraction, the others 0.
    fractions = torch.bincount(target.flatten(), minlength=classes).float() / target.numel()
    return SimulationProblem(model, inputs, metric, chance=fractions.max().item() / classes)

"""Model optimisation simulation: the last and most expensive filter stage.

CSE-Autoloss (seed 000, "Model Optimization Simulation") trains briefly with
each surviving candidate on as many images as there are classes and keeps the
candidate only if the task metric improves. This stage does the same for each
kind of branch, on a tiny problem small enough to take a fraction of a second
on a CPU:

- ``cls``: :class:`SmallCNN` on :func:`one_per_class` digits (10 images,
  10 classes), softmax logits; metric = training accuracy.
- ``bcls``: the same network and images, logits read as 10 independent
  sigmoids; metric = training accuracy (argmax over classes).
- ``reg``: a linear box regressor from a fixed random feature per sample to
  box deltas applied to anchors, trained through ``i, u, e``; metric = mean IoU.
- ``zero``: :class:`SmallCNN` with ``dense=True`` segmenting the digits into
  background / faint / bright stroke pixels; metric = mIoU.

A candidate is rejected if its loss (or gradient) becomes NaN/Inf, at the
first such step; if the metric after training is not above both the untrained
model's and chance (the best constant prediction's, so that a loss collapsing
the model to one class cannot pass); if it runs out of time (checked between
steps); or if anything in it raises. Training is deterministic: data and
initialisation come from ``seed`` under a forked RNG, and the model is trained
on one CPU thread by default.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gp_loss.boxes import paired_areas
from gp_loss.data.digits import NUM_CLASSES, one_per_class
from gp_loss.filters.base import Candidate, StageResult
from gp_loss.models.small_cnn import SmallCNN
from gp_loss.threads import torch_threads

# Adam learning rate per kind. Adam is used (not SGD) because it is invariant
# to the scale of the loss, so that e.g. a loss 100× CE is judged like CE: the
# simulation tests the direction a loss pushes the model, not its step size.
DEFAULT_LR: dict[str, float] = {"cls": 0.01, "bcls": 0.01, "reg": 0.05, "zero": 0.01}
# Steps per kind. Sigmoid losses learn to discriminate more slowly than
# softmax ones (each class is pushed down by 9 negatives per positive):
# sigmoid focal and CSE-Autoloss-B need 60-80 steps to beat chance clearly.
DEFAULT_STEPS: dict[str, int] = {"cls": 30, "bcls": 80, "reg": 30, "zero": 30}

# Fixed IoU-like weights of the classification branches lie in this range, as
# positives' IoUs with their ground truth do in a detector.
_IOU_RANGE = (0.5, 0.95)
# Pixel-intensity thresholds of the ``zero`` segmentation target (pixels in [0, 1]).
_FAINT, _BRIGHT = 0.25, 0.625
_SEG_CLASSES = 3
_TOLERANCE = 1e-6


@dataclass
class _Problem:
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


def _iou_weights(n: int, g: torch.Generator, device) -> torch.Tensor:
    """N fixed IoU-like values in ``_IOU_RANGE`` (N)."""
    lo, hi = _IOU_RANGE
    return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` (N×C) whose argmax is ``labels`` (N)."""
    return (logits.argmax(1) == labels).sum().item() / len(labels)


def _classification(kind: str, seed: int, device) -> _Problem:
    """``cls``/``bcls``: SmallCNN on one digit per class; inputs x, y, w (each N×C)."""
    images, labels = one_per_class(seed)
    images, labels = images.to(device), labels.to(device)
    g = torch.Generator().manual_seed(seed)
    y = F.one_hot(labels, NUM_CLASSES).float()
    iou = _iou_weights(len(labels), g, device)[:, None]
    if kind == "cls":
        # Every sample is a positive: w is its IoU broadcast over the classes.
        w = iou.expand_as(y).contiguous()
    else:
        # Binary branch: w is the IoU at the ground-truth class, 0 elsewhere.
        w = y * iou
    model = SmallCNN(NUM_CLASSES).to(device)
    if kind == "bcls":
        # RetinaNet's prior initialisation: start every sigmoid at p = 1/C. Without
        # it a sigmoid loss spends its first steps pushing all logits down together
        # (9 negatives per positive), and a few dozen steps show no learning.
        nn.init.constant_(model.head.bias, -math.log(NUM_CLASSES - 1))

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return m(images), y, w

    def metric(m: nn.Module) -> float:
        return _accuracy(m(images), labels)

    # One image per class: predicting any single class is right once.
    return _Problem(model, inputs, metric, chance=1 / NUM_CLASSES)


class _BoxRegressor(nn.Module):
    """Linear map from a fixed feature (N×F) to deltas (N×4) decoded on anchors.

    Deltas are Faster R-CNN's ``(dx, dy, dw, dh)``: centre shifts in anchor
    widths/heights and log-scale factors. Zero-initialised, so the untrained
    model predicts the anchors themselves.
    """

    def __init__(self, features: torch.Tensor, anchors: torch.Tensor):
        super().__init__()
        self.register_buffer("features", features)
        self.register_buffer("anchors", anchors)
        self.linear = nn.Linear(features.shape[1], 4)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self) -> torch.Tensor:
        """Predicted boxes N×4 (x1, y1, x2, y2)."""
        d = self.linear(self.features)
        a = self.anchors
        wh = a[:, 2:] - a[:, :2]
        centre = (a[:, :2] + a[:, 2:]) / 2 + d[:, :2] * wh
        # Clamp the log-scale as torchvision does, so a runaway loss cannot overflow exp.
        size = wh * torch.exp(d[:, 2:].clamp(max=math.log(1000 / 16)))
        return torch.cat([centre - size / 2, centre + size / 2], 1)


def _regression(seed: int, device) -> _Problem:
    """``reg``: 10 anchors with jittered targets (pixel scale); inputs i, u, e (each N)."""
    n, dim = NUM_CLASSES, 16
    g = torch.Generator().manual_seed(seed)
    # Pixel-scale boxes (tens of pixels) as in a detector: some paper losses
    # (CSE-Autoloss-A/B reg) have additive constants that assume that scale.
    centre = 30 + 40 * torch.rand(n, 2, generator=g)
    wh = 20 + 30 * torch.rand(n, 2, generator=g)
    anchors = torch.cat([centre - wh / 2, centre + wh / 2], 1)
    # Targets: centre shifted by up to 20% of the size, size scaled by e^±0.3,
    # so every anchor overlaps its target (plain IoU loss has a gradient).
    t_centre = centre + 0.4 * (torch.rand(n, 2, generator=g) - 0.5) * wh
    t_wh = wh * torch.exp(0.6 * (torch.rand(n, 2, generator=g) - 0.5))
    targets = torch.cat([t_centre - t_wh / 2, t_centre + t_wh / 2], 1).to(device)
    # Unit-norm random features: well conditioned, so 10 samples are fittable.
    features = torch.randn(n, dim, generator=g)
    features = features / features.norm(dim=1, keepdim=True)
    model = _BoxRegressor(features, anchors).to(device)

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return paired_areas(m(), targets)

    def metric(m: nn.Module) -> float:
        i, u, _ = paired_areas(m(), targets)
        return (i / u).mean().item()

    return _Problem(model, inputs, metric)


def _segmentation(seed: int, device) -> _Problem:
    """``zero``: per-pixel 3-class segmentation of the digits; inputs yhat, y (N×3×8×8)."""
    images, _ = one_per_class(seed)
    images = images.to(device)
    # Background / faint stroke / bright stroke by intensity: a target that is
    # learnable from the pixels themselves, with three reasonably sized classes.
    target = (images[:, 0] >= _FAINT).long() + (images[:, 0] >= _BRIGHT).long()  # N×8×8
    y = F.one_hot(target, _SEG_CLASSES).permute(0, 3, 1, 2).float()
    model = SmallCNN(_SEG_CLASSES, dense=True).to(device)

    def inputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
        return m(images), y

    def metric(m: nn.Module) -> float:
        pred = m(images).argmax(1)
        ious = []
        for c in range(_SEG_CLASSES):
            inter = ((pred == c) & (target == c)).sum().item()
            union = ((pred == c) | (target == c)).sum().item()
            if union:
                ious.append(inter / union)
        return sum(ious) / len(ious)

    # Predicting class c everywhere: IoU_c = its pixel fraction, the others 0.
    fractions = torch.bincount(target.flatten(), minlength=_SEG_CLASSES).float() / target.numel()
    return _Problem(model, inputs, metric, chance=fractions.max().item() / _SEG_CLASSES)


class SimulationStage:
    """Train a tiny model briefly with the candidate loss; keep it if the metric improves.

    Args:
        steps: Adam steps of the simulation (a few dozen); an int for every
            kind, a dict per kind name, or ``None`` for :data:`DEFAULT_STEPS`.
        lr: Adam learning rate; a float for every kind, a dict per kind name,
            or ``None`` for :data:`DEFAULT_LR`.
        seed: picks the images, weights, boxes and the model initialisation.
        time_limit: seconds a candidate may take before it is rejected.
        min_gain: the metric must exceed both the untrained model's and chance
            (the best constant prediction's) by more than this.
        device: where the simulation runs.
        num_threads: torch CPU threads while a candidate trains (restored
            afterwards); ``None`` leaves torch's setting alone. One thread is
            the default because these tensors are tiny: extra threads only
            spin, and under load (parallel search workers) made the
            simulation 10-20× slower here. It also makes the numbers
            independent of the machine's core count.

    ``numbers`` of the result: ``metric_before``, ``metric_chance``,
    ``metric_after`` (when training finished), ``final_loss``, ``steps_run``;
    ``nan_step`` on a NaN/Inf rejection.
    """

    name = "simulation"

    def __init__(self, steps: int | dict[str, int] | None = None,
                 lr: float | dict[str, float] | None = None, seed: int = 0,
                 time_limit: float = 30.0, min_gain: float = 0.0,
                 device: str | torch.device = "cpu", num_threads: int | None = 1):
        self.steps = _per_kind(steps, DEFAULT_STEPS, int)
        self.lr = _per_kind(lr, DEFAULT_LR, float)
        self.seed, self.time_limit, self.min_gain, self.device = seed, time_limit, min_gain, device
        self.num_threads = num_threads
        # Built lazily per kind and reused: the data, the untrained model and its metric.
        self._problems: dict[str, tuple[_Problem, float]] = {}

    def problem(self, kind_name: str) -> tuple[_Problem, float]:
        """The kind's problem and its untrained metric (built once)."""
        if kind_name not in self._problems:
            # Seed the model initialisation without touching the caller's RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                if kind_name in ("cls", "bcls"):
                    p = _classification(kind_name, self.seed, self.device)
                elif kind_name == "reg":
                    p = _regression(self.seed, self.device)
                elif kind_name == "zero":
                    p = _segmentation(self.seed, self.device)
                else:
                    raise ValueError(f"no simulation for kind {kind_name!r}")
            with torch.no_grad():
                before = p.metric(p.model)
            self._problems[kind_name] = (p, before)
        return self._problems[kind_name]

    def __call__(self, candidate: Candidate) -> StageResult:
        with torch_threads(self.num_threads):
            return self._simulate(candidate)

    def _simulate(self, candidate: Candidate) -> StageResult:
        start = time.perf_counter()
        numbers: dict[str, float] = {}

        def result(passed: bool, reason: str) -> StageResult:
            return StageResult(self.name, passed, reason, dict(numbers), time.perf_counter() - start)

        try:
            kind = candidate.kind.name
            problem, before = self.problem(kind)
            numbers.update(metric_before=before, metric_chance=problem.chance)
            steps = self.steps[kind]
            model = copy.deepcopy(problem.model)
            params = list(model.parameters())
            opt = torch.optim.Adam(params, lr=self.lr[kind])
            for step in range(steps + 1):  # the last pass only checks the trained model's loss
                numbers["steps_run"] = step
                if time.perf_counter() - start > self.time_limit:
                    return result(False, f"time limit {self.time_limit} s exceeded at step {step}")
                loss = candidate.loss(*problem.inputs(model))
                if loss.dim() != 0:
                    return result(False, f"output is not a scalar (shape {tuple(loss.shape)})")
                if not torch.isfinite(loss):
                    numbers["nan_step"] = step
                    return result(False, f"loss is {loss.item()} at step {step}")
                numbers["final_loss"] = loss.item()
                if step == steps:
                    break
                if not loss.requires_grad:
                    return result(False, "loss does not depend on the prediction")
                opt.zero_grad()
                loss.backward()
                # A NaN gradient would silently poison the weights: stop here instead.
                if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
                    numbers["nan_step"] = step
                    return result(False, f"gradient is not finite at step {step}")
                opt.step()
            with torch.no_grad():
                after = problem.metric(model)
            numbers["metric_after"] = after
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, f"{type(err).__name__}: {err}")
        # The tolerance keeps float noise (e.g. float32 0.1 vs 1/10) from counting as a gain.
        bar = max(before, problem.chance) + self.min_gain + _TOLERANCE
        if after > bar:
            return result(True, f"metric improved {before:.3f} -> {after:.3f} (chance {problem.chance:.3f})")
        return result(False, f"metric did not improve: {before:.3f} -> {after:.3f} "
                             f"(chance {problem.chance:.3f})")


def _per_kind(value, defaults: dict, cast: Callable) -> dict:
    """Expand a per-kind setting: one value for every kind, a partial dict, or ``None``."""
    table = dict(defaults)
    if isinstance(value, dict):
        table.update({k: cast(v) for k, v in value.items()})
    elif value is not None:
        table = {k: cast(value) for k in defaults}
    return table

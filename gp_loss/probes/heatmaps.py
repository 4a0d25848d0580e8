"""The ``heat`` kind's probes: keypoint heatmap regression, as a top-down pose network's output.

A ``heat`` loss takes ``yhat`` (predicted heatmaps), ``y`` (Gaussian target heatmaps, 0 for a
keypoint not labelled) and ``w`` (the keypoint's visibility weight: 1 labelled, 0 not), each
N×K×H×W. Its probes, all deterministic for a seed:

- :func:`heat_batch` (validity): random predictions near 0, as an untrained head's, Gaussian
  targets at random cells, one keypoint in five unlabelled;
- :class:`HeatmapProbe` (rejection): B samples of such heatmaps; metric PCK, the fraction of
  labelled keypoints whose predicted peak lies within one cell of the target's (the
  Percentage of Correct Keypoints, Yang & Ramanan, "Articulated Human Detection with
  Flexible Mixtures of Parts", TPAMI 2013, here on the heatmap grid);
- :func:`heatmap_problem` (simulation): a dense SmallCNN on one digit per class, each at a seeded
  place on a small canvas, predicting two heatmaps: its brightest pixel and its top ink pixel; metric PCK;
- :data:`HEAT_SWEEPS` (report curves): one labelled pixel, at the target's peak or on the
  background, its prediction rising.
"""
from __future__ import annotations

import numpy as np
import torch

from gp_loss.data.digits import one_per_class
from gp_loss.models.small_cnn import SmallCNN
from gp_loss.probes.curve_sweeps import DTYPE, POINTS, Sweep
from gp_loss.probes.rejection import B, RejectionSamples
from gp_loss.probes.samples import SampleBatch
from gp_loss.probes.simulation import SimulationProblem

SIGMA = 1.0                 # the target Gaussian's standard deviation, in cells
UNLABELLED_EVERY = 5        # about one keypoint in this many has no label (w = 0, y = 0)
INITIAL_SCALE = 0.05        # an untrained head's heatmaps: small values around 0 (SimpleBaseline's std 0.001 init)


def gaussians(points: torch.Tensor, height: int, width: int, sigma: float = SIGMA) -> torch.Tensor:
    """...×K×2 keypoints (x, y) in cell coordinates (cell j centred at j) -> ...×K×height×width Gaussians of
    peak 1 and standard deviation ``sigma`` cells, in the points' dtype."""
    xs = torch.arange(width, dtype=points.dtype, device=points.device)
    ys = torch.arange(height, dtype=points.dtype, device=points.device)
    gx = torch.exp(-(xs - points[..., 0:1]) ** 2 / (2 * sigma ** 2))  # ...×K×W
    gy = torch.exp(-(ys - points[..., 1:2]) ** 2 / (2 * sigma ** 2))  # ...×K×H
    return gy[..., :, None] * gx[..., None, :]


def pck(heatmaps: torch.Tensor, points: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of labelled keypoints whose peak cell is within one cell of the keypoint's.

    ``heatmaps`` ...×N×K×H×W, ``points`` ...×N×K×2 (x, y) in cells, ``labelled`` ...×N×K bool -> ``...``.
    """
    w = heatmaps.shape[-1]
    at = heatmaps.flatten(-2).argmax(-1)
    peak = torch.stack([at % w, torch.div(at, w, rounding_mode="floor")], -1).to(points.dtype)
    hit = ((peak - points.round()).abs().amax(-1) <= 1) & labelled
    return hit.flatten(-2).sum(-1).to(torch.float32) / labelled.flatten(-2).sum(-1).clamp(min=1)


def _targets(g: torch.Generator, shape: tuple[int, ...], keypoints: int, size: int):
    """``(points, labelled, y, w)`` of random keypoints: ``shape``×K×2, ``shape``×K, and ``shape``×K×size×size."""
    points = torch.randint(0, size, (*shape, keypoints, 2), generator=g).double()
    labelled = torch.randint(0, UNLABELLED_EVERY, (*shape, keypoints), generator=g) > 0
    w = labelled.double()[..., None, None].expand(*shape, keypoints, size, size).contiguous()
    return points, labelled, gaussians(points, size, size) * w, w


def heat_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``heat``: ``yhat``, ``y``, ``w`` each N×classes×size×size, N = n/8 (at least 2); ``classes`` keypoints."""
    images = max(2, n // 8)
    _, _, y, w = _targets(g, (images,), classes, size)
    _, _, other_y, _ = _targets(g, (images,), classes, size)
    pred = (INITIAL_SCALE * torch.randn(images, classes, size, size, generator=g, dtype=torch.float64)).float()
    pred = pred.to(device).requires_grad_()
    target, other = (y.float().to(device), w.float().to(device)), (other_y.float().to(device), w.float().to(device))

    def make(p, t):
        return p, t[0], t[1]

    # Late in training a head reproduces its targets almost exactly: yhat - y near 0 everywhere.
    return SampleBatch(pred, target, make, other, target[0].clone())


class HeatmapProbe:
    """``heat``: B samples of N images' K heatmaps (8×8 cells), predictions near 0; metric PCK."""

    def __init__(self, n: int = 4, keypoints: int = 3, size: int = 8, lr: float = 0.05):
        self.n, self.keypoints, self.size, self.lr = n, keypoints, size, lr
        self.kind_name = "heat"

    def make_samples(self, seed: int) -> RejectionSamples:
        g = torch.Generator().manual_seed(seed)
        points, labelled, y, w = _targets(g, (B, self.n), self.keypoints, self.size)
        prediction = INITIAL_SCALE * torch.randn(B, self.n, self.keypoints, self.size, self.size, generator=g)
        y, w = y.float().contiguous(), w.float().contiguous()
        return RejectionSamples(self.kind_name, prediction.float(), lambda p: (p, y, w),
                                lambda p: pck(p, points, labelled), self.lr)


CANVAS = 12                 # the simulation's canvas side: an 8×8 digit at a seeded offset
INK = 0.25                  # a digit pixel counts as ink above this intensity (0..1)


def _digit_canvases(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One digit per class pasted at a seeded offset on a :data:`CANVAS`-side canvas: N×1×S×S images and
    N×2×2 keypoints (x, y) in cells, the brightest pixel and the top ink pixel (the median one of the top
    ink row). Both are local, within the simulation network's 5×5 receptive field, and move with the digit."""
    digits, _ = one_per_class(seed)
    rng = np.random.default_rng(seed)
    images = torch.zeros(len(digits), 1, CANVAS, CANVAS)
    points = []
    for i, digit in enumerate(digits[:, 0]):
        oy, ox = (int(v) for v in rng.integers(0, CANVAS - digit.shape[0] + 1, 2))
        images[i, 0, oy:oy + digit.shape[0], ox:ox + digit.shape[1]] = digit
        image = images[i, 0].numpy()
        at = int(image.argmax())
        ys, xs = np.nonzero(image > INK)
        top_xs = np.sort(xs[ys == ys.min()])
        points.append([(at % CANVAS, at // CANVAS), (int(top_xs[(len(top_xs) - 1) // 2]), int(ys.min()))])
    return images, torch.tensor(points, dtype=torch.float64)


def _best_constant_pck(points: torch.Tensor, size: int) -> float:
    """PCK of the best constant prediction: per keypoint, the one cell within reach of the most targets."""
    cells = np.array([(x, y) for y in range(size) for x in range(size)], dtype=np.float64)
    scores = []
    for k in range(points.shape[1]):
        target = points[:, k].round().numpy()
        hits = (np.abs(cells[:, None, :] - target[None]).max(-1) <= 1).mean(1)
        scores.append(hits.max())
    return float(np.mean(scores))


def heatmap_problem(seed: int, device: str | torch.device) -> SimulationProblem:
    """``heat``: a dense SmallCNN on :func:`_digit_canvases` predicting 2 keypoint heatmaps; metric PCK."""
    images, points = _digit_canvases(seed)
    size = CANVAS
    labelled = torch.ones(points.shape[:2], dtype=torch.bool)
    y = gaussians(points, size, size).float().to(device)
    w = torch.ones_like(y)
    images = images.to(device)
    model = SmallCNN(points.shape[1], dense=True).to(device)

    def inputs(m: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        return m(images), y, w

    def metric(m: torch.nn.Module) -> float:
        return pck(m(images).cpu()[None], points[None], labelled[None]).item()

    return SimulationProblem(model, inputs, metric, chance=_best_constant_pck(points, size))


def _pixel(target: float):
    def make() -> tuple:
        x = np.linspace(-0.5, 1.5, POINTS)
        yhat = torch.tensor(x, dtype=DTYPE).reshape(-1, 1, 1, 1).requires_grad_(True)
        y = torch.full_like(yhat, target, requires_grad=False)
        w = torch.ones_like(y)
        return x, yhat, lambda pred: (pred, y, w)
    return make


HEAT_SWEEPS: tuple[Sweep, ...] = (
    Sweep("peak", "one labelled pixel at the target's peak (y = 1), prediction rising", "predicted value $\\hat{y}$",
          "$\\|\\partial L / \\partial \\hat{y}\\|$", _pixel(1.0), one_at_a_time=True),
    Sweep("background", "one labelled pixel off the peak (y = 0), prediction rising", "predicted value $\\hat{y}$",
          "$\\|\\partial L / \\partial \\hat{y}\\|$", _pixel(0.0), one_at_a_time=True),
)
